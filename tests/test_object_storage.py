"""--storage s3://... for real, against an S3-compatible server on loopback (moto's, as Ray's own tests
use): a study runs there, survives a driver kill and resumes; status, report and denoise work from the
URI on a machine that has none of its files (a fresh local mirror); the report and best checkpoints are
uploaded beside Tune's files."""
from __future__ import annotations

import os
import signal
import socket
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import DATA, cli, cli_process, ray_env

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def s3():
    from moto.server import ThreadedMotoServer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket="lab")
    yield env
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    server.stop()


def keys(prefix: str) -> set[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket="lab", Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_study_on_object_storage_survives_a_driver_kill_and_reads_back_anywhere(s3, tmp_path, monkeypatch):
    storage = "s3://lab/studies"
    args = ("run", str(DATA / "tiny.yaml"), "--budget", "quick", "--storage", storage)
    env = ray_env() | s3 | {
        "TUNE_GLOBAL_CHECKPOINT_S": "1", "DENOISE_STUDY_CACHE": str(tmp_path / "driver-mirror")}
    first = cli_process(*args, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and len([k for k in keys("studies/tiny/records/")]) < 3:
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # records reach the object store live: the driver dies mid-study
    first.wait()
    second = cli_process(*args, env=env)
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out
    assert "resuming tiny" in out
    stored = keys("studies/tiny/")
    assert {"studies/tiny/report.html", "studies/tiny/study.json", "studies/tiny/trials.parquet"} <= stored
    assert any(k.startswith("studies/tiny/best/loss=l1/") and k.endswith("model.pt") for k in stored), sorted(k for k in stored if "best" in k or "trial-" not in k)

    # another machine: an empty local mirror, only the URI
    monkeypatch.setenv("DENOISE_STUDY_CACHE", str(tmp_path / "elsewhere"))
    code, out, err = cli("status", "tiny", "--storage", storage)
    assert code == 0 and "8/8 trials finished" in out, out + err
    code, out, err = cli("report", "tiny", "--storage", storage)
    assert code == 0 and (tmp_path / "elsewhere" / "tiny" / "report.html").exists(), out + err
    df = pd.read_parquet(tmp_path / "elsewhere" / "tiny" / "trials.parquet")
    assert len(df) == 8 and not df.duplicated(["cell", "phase", "seed"]).any()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24), dtype=np.uint8)).save(tmp_path / "in.png")
    code, out, err = cli("denoise", "--study", "tiny", "--storage", storage, str(tmp_path / "in.png"),
                         "-o", str(tmp_path / "out.png"))
    assert code == 0 and Image.open(tmp_path / "out.png").size == (24, 24), out + err


def test_the_s3_lock_is_a_conditional_write_one_driver_of_two_machines_holds_it(s3):
    """Two drivers (as on two machines: another host name) race for one study on S3: one holds it, the other
    is refused naming it; a lock whose heartbeat stopped is taken over by exactly one of two contenders."""
    import json
    import time

    import boto3

    from studies.lock import STALE_S, ObjectLock, StudyLocked

    first, second = ObjectLock("s3://lab/locks/a"), ObjectLock("s3://lab/locks/a")
    second.me["host"] = "another-machine"
    first.acquire()
    try:
        with pytest.raises(StudyLocked, match=r"is being run by another driver \(host "):
            second.acquire()
    finally:
        first.release()
    assert "locks/a/driver.lock" not in keys("locks/a/")  # released: the object is gone
    # a driver on another machine died: its heartbeat is old, and two contenders find it stale at once
    dead = {"host": "gone", "pid": 1, "since": 0, "heartbeat": time.time() - STALE_S - 5, "token": "old"}
    boto3.client("s3").put_object(Bucket="lab", Key="locks/b/driver.lock", Body=json.dumps(dead).encode())
    a, b = ObjectLock("s3://lab/locks/b"), ObjectLock("s3://lab/locks/b")
    stale_etag = a._read()[1]
    assert a._put(IfMatch=stale_etag) and not b._put(IfMatch=stale_etag)  # the same stale ETag: one write wins
    holder, _ = b._read()
    assert holder["token"] == a.me["token"]
    with pytest.raises(StudyLocked):
        b.acquire()
