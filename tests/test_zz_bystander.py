"""A user's study, running in a Ray of its own while the whole test suite runs, is untouched by it.

conftest.py starts the study (a toy task whose steps sleep: hours long, almost no CPU) when this test is
collected, and runs this test last. Every Ray the suite starts has its own temp dir, ports and namespace,
and each test stops only what it started; the autoscaling test no longer runs `ray stop --force`."""
import json
import os
import signal
import time

import psutil
import pytest

pytestmark = pytest.mark.ray


def _record(storage):
    recs = [json.loads(p.read_text()) for p in (storage / "bystander" / "records").glob("*.json")]
    return recs[0] if recs else None


def test_a_study_in_another_ray_survived_the_whole_suite(bystander):
    proc, storage = bystander["proc"], bystander["storage"]
    assert proc.poll() is None, f"the bystander study died during the suite:\n{proc.stdout.read()[-3000:]}"
    first = _record(storage)
    assert first is not None and first["status"] == "running" and first["attempts"] == 1, first
    time.sleep(4)  # and it is still making progress, evaluating about once a second
    second = _record(storage)
    assert len(second["history"]) > len(first["history"]) >= 1
    minutes = (time.time() - bystander["started"]) / 60
    ray_tmp = bystander["env"]["RAY_TMPDIR"]
    raylets = [p for p in psutil.process_iter(["cmdline"]) if ray_tmp in " ".join(p.info["cmdline"] or [])]
    assert raylets, "the bystander's own Ray is gone"
    # Ctrl-C: the run stops, records how it ended, and its Ray goes with it
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "interrupted; run the same command again to resume" in out, out[-2000:]
    run = json.loads((storage / "bystander" / "study.json").read_text())["runs"][-1]
    assert run["ended"] == "interrupted" and run["end"] - run["start"] > 0.9 * minutes * 60
    print(f"\\nbystander: ran {minutes:.1f} min beside the suite, {len(second['history'])} evaluations")
