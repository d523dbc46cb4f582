"""One driver per study: `<study>/driver.lock`, created exclusively, kept alive by a heartbeat.

Two `denoise-study run` of one study on one storage would each ask for every planned trial and
confirm every cell twice. The first driver creates the lock file with O_CREAT | O_EXCL (atomic on
local disks and on NFS v3 and later); a second finds it and stops, naming the running driver. A
lock is stale, and is taken over, when its driver is gone: on the same host its pid no longer
runs; from another host (shared storage) its heartbeat, rewritten every HEARTBEAT_S, is older
than STALE_S. Taking over renames the stale file away first, so of two drivers that both found it
stale only one wins the rename, and then the exclusive create decides.

On S3 (`--storage s3://...`) the lock is an object beside the study's files (`ObjectLock`): created
with a conditional write (If-None-Match: *, which S3 answers 412 when the object exists), its
heartbeat and a stale lock's takeover written only if its ETag is still the one read (If-Match), so of
two drivers on two machines exactly one holds it. `driver_lock(storage, name)` picks the lock.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from studies.heartbeat import Heartbeat
from studies.store import write_atomic

HEARTBEAT_S = 10.0
STALE_S = 60.0  # a lock from another host whose heartbeat is older than this is stale


class StudyLocked(Exception):
    """Another live driver runs this study; the message names it."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to someone else
        return True
    return True


def describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {since}"


def read_holder(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_stale(holder: dict | None, path: Path, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if holder is None:  # empty or half-written (a driver between its create and its write): stale only when old
        try:
            return now - path.stat().st_mtime > STALE_S
        except FileNotFoundError:
            return True
    if holder.get("host") == socket.gethostname():
        return not pid_alive(int(holder.get("pid", -1)))
    return now - float(holder.get("heartbeat", 0)) > STALE_S


class DriverLock:
    """`with DriverLock(sdir):` holds the study for this process, or raises StudyLocked."""

    def __init__(self, sdir: Path):
        self.path = Path(sdir) / "driver.lock"
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(), "token": uuid.uuid4().hex}
        self._heart: Heartbeat | None = None

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({**self.me, "heartbeat": time.time()}, f)
        return True

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        took_over = False
        for _ in range(3):
            if self._create():
                if took_over:  # a contender that also found the lock stale may have renamed ours away
                    time.sleep(0.5)
                    holder = read_holder(self.path)
                    if holder is None or holder.get("token") != self.me["token"]:
                        raise StudyLocked(f"study {self.path.parent.name!r} was taken over by another driver"
                                          + (f" ({describe(holder)})" if holder else ""))
                self._heart = Heartbeat(self._beat, HEARTBEAT_S, "denoise-study-lock").start()
                return
            holder = read_holder(self.path)
            if holder is not None and holder.get("token") == self.me["token"]:
                return
            if not is_stale(holder, self.path):
                raise StudyLocked(f"study {self.path.parent.name!r} is being run by another driver ({describe(holder)}); "
                                  f"wait for it to finish, or stop it and run again to resume")
            try:  # take the stale lock over: only one of several contenders wins this rename
                os.rename(self.path, self.path.with_name(f"driver.lock.stale-{self.me['token']}"))
                os.unlink(self.path.with_name(f"driver.lock.stale-{self.me['token']}"))
            except FileNotFoundError:
                pass
            took_over = True
        raise StudyLocked(f"study {self.path.parent.name!r}: could not take its driver lock ({self.path})")

    def _beat(self) -> bool:
        holder = read_holder(self.path)
        if holder is None or holder.get("token") != self.me["token"]:
            return False  # taken over (this driver was presumed dead): stop touching it
        write_atomic(self.path, json.dumps({**self.me, "heartbeat": time.time()}))
        return True

    def _stop_heart(self) -> None:
        if self._heart is not None:
            self._heart.stop()

    def release(self) -> None:
        self._stop_heart()
        holder = read_holder(self.path)
        if holder is not None and holder.get("token") == self.me["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "DriverLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ObjectLock(DriverLock):
    """driver.lock as an S3 object, written with conditional requests (boto3; any S3-compatible store
    that honours If-None-Match and If-Match on PutObject: AWS S3 since 2024, MinIO, moto)."""

    def __init__(self, uri: str):
        from urllib.parse import urlparse

        super().__init__(Path("/nonexistent"))
        u = urlparse(uri)
        self.uri, self.bucket, self.key = uri, u.netloc, f"{u.path.strip('/')}/driver.lock"
        self.etag: str | None = None
        import boto3

        self.s3 = boto3.client("s3")

    def _put(self, **condition) -> bool:
        from botocore.exceptions import ClientError

        body = json.dumps({**self.me, "heartbeat": time.time()}).encode()
        try:
            self.etag = self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                return False
            raise

    def _read(self) -> tuple[dict | None, str | None]:
        from botocore.exceptions import ClientError

        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise
        try:
            return json.loads(obj["Body"].read()), obj["ETag"]
        except json.JSONDecodeError:
            return None, obj["ETag"]

    def acquire(self) -> None:
        for _ in range(3):
            if self._put(IfNoneMatch="*"):
                break
            holder, etag = self._read()
            if etag is None:
                continue  # released between our write and our read: try again
            if holder is not None and not is_stale(holder, Path("/nonexistent")):
                raise StudyLocked(f"study at {self.uri!r} is being run by another driver ({describe(holder)}); "
                                  f"wait for it to finish, or stop it and run again to resume")
            if self._put(IfMatch=etag):  # take the stale lock over: only one contender's ETag still matches
                break
            raise StudyLocked(f"study at {self.uri!r} was taken over by another driver")
        else:
            raise StudyLocked(f"study at {self.uri!r}: could not take its driver lock")
        self._heart = Heartbeat(self._beat, HEARTBEAT_S, "denoise-study-lock").start()

    def _beat(self) -> bool:
        return self._put(IfMatch=self.etag)  # False: taken over (this driver was presumed dead): stop touching it

    def release(self) -> None:
        self._stop_heart()
        holder, etag = self._read()
        if holder is not None and holder.get("token") == self.me["token"] and etag == self.etag:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)


def driver_lock(storage: str | None, name: str) -> DriverLock:
    """The study's lock: an S3 object for s3:// storage, else a file in the study's (local or NFS) directory.
    Other object stores (gs:// ...) fall back to a lock in this machine's mirror: one driver per machine."""
    from studies.remote import study_uri
    from studies.store import is_uri, resolve_storage, study_dir

    storage = resolve_storage(storage)
    if is_uri(storage) and storage.startswith("s3://"):
        return ObjectLock(study_uri(storage, name))
    return DriverLock(study_dir(storage, name))

