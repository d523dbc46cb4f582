"""One driver per study: the lock file, its takeover when stale, and the CLI's answer to a second driver."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from studies.lock import STALE_S, DriverLock, StudyLocked, read_holder
from tests.conftest import cli


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    with DriverLock(tmp_path / "study"):
        with pytest.raises(StudyLocked, match=rf"host {socket.gethostname()}, pid {os.getpid()}, since "):
            DriverLock(tmp_path / "study").acquire()
    assert not (tmp_path / "study" / "driver.lock").exists()  # released on exit
    with DriverLock(tmp_path / "study"):  # and can be taken again
        pass


def test_lock_of_a_dead_driver_on_this_host_is_taken_over(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "driver.lock").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": dead_pid(), "since": 0, "heartbeat": time.time(), "token": "old"}))
    with DriverLock(tmp_path / "s") as lock:
        assert read_holder(lock.path)["token"] == lock.me["token"]


@pytest.mark.parametrize("age,taken", [(STALE_S + 5, True), (1.0, False)])
def test_lock_from_another_host_is_stale_only_when_its_heartbeat_is_old(tmp_path, age, taken):
    (tmp_path / "s").mkdir()
    holder = {"host": "some-other-node", "pid": 1, "since": time.time() - 3600, "heartbeat": time.time() - age,
              "token": "theirs"}
    (tmp_path / "s" / "driver.lock").write_text(json.dumps(holder))
    lock = DriverLock(tmp_path / "s")
    if taken:
        with lock:
            assert read_holder(lock.path)["token"] == lock.me["token"]
    else:
        with pytest.raises(StudyLocked, match="host some-other-node, pid 1"):
            lock.acquire()
        assert read_holder(lock.path)["token"] == "theirs"  # untouched


def test_heartbeat_keeps_the_lock_fresh(tmp_path, monkeypatch):
    import studies.lock as L

    monkeypatch.setattr(L, "HEARTBEAT_S", 0.05)
    with DriverLock(tmp_path / "s") as lock:
        first = read_holder(lock.path)["heartbeat"]
        time.sleep(0.3)
        assert read_holder(lock.path)["heartbeat"] > first


def test_run_of_a_locked_study_exits_2_and_writes_nothing(tmp_path):
    storage = tmp_path / "store"
    sdir = storage / "n2n_loss"
    sdir.mkdir(parents=True)
    holder = {"host": "gpu-head", "pid": 4242, "since": time.time() - 60, "heartbeat": time.time(), "token": "x"}
    (sdir / "driver.lock").write_text(json.dumps(holder))
    code, out, err = cli("run", "n2n_loss", "--budget", "smoke", "--storage", str(storage))
    assert code == 2 and err.count("\n") == 1, err
    assert "is being run by another driver (host gpu-head, pid 4242, since " in err
    assert sorted(p.name for p in sdir.iterdir()) == ["driver.lock"]


@pytest.mark.parametrize("make,needle", [
    (lambda p: (p / "file").write_text("x") and p / "file", "is a file, not a directory"),
    (lambda p: (p / "file").write_text("x") and p / "file" / "below", "is a file, not a directory"),
])
def test_storage_that_cannot_be_a_directory_exits_2(tmp_path, make, needle):
    storage = make(tmp_path)
    code, out, err = cli("run", "n2n_loss", "--budget", "smoke", "--storage", str(storage))
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "x"
