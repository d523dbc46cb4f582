"""A real SIGTERM in every phase of a real `denoise-study` process: the data checks, just after Ray's start, the
classical baselines, the report, and `evaluate`. Each stops within seconds with one line and exit 1, keeps what
it finished, and the same command then goes on to the uninterrupted answer. (The trials phase: test_studies.)

Each phase is held open by tests/hold/sitecustomize.py (DENOISE_TEST_HOLD names the function), so the signal lands
inside it, not before or after.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, ROOT, ray_env
from tests.fixtures import standard_set

HOLD_PATH = str(Path(__file__).parent / "hold")
STOP_WITHIN_S = 10  # Kubernetes' grace period is 30 s; Ray's own shutdown takes a few


class Driver:
    """`denoise-study ARGS` as its own process; its output collected line by line as it comes."""

    def __init__(self, tmp_path: Path, *args: str, hold: str | None = None, own_ray: bool = True):
        self.mark = tmp_path / f"held-{time.time_ns()}"
        self.calls = tmp_path / f"calls-{time.time_ns()}"
        env = ray_env() if own_ray else {**os.environ}
        env["PYTHONPATH"] = os.pathsep.join([HOLD_PATH, str(ROOT)])
        if hold:
            env |= {"DENOISE_TEST_HOLD": hold, "DENOISE_TEST_HOLD_MARK": str(self.mark),
                    "DENOISE_TEST_HOLD_CALLS": str(self.calls)}
        exe = Path(sys.executable).parent / "denoise-study"
        self.proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")))
        self.reader.start()

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def wait_until(self, ready, limit: float = 400) -> None:
        deadline = time.time() + limit
        while time.time() < deadline:
            if ready():
                return
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before the phase:\n{self.out}"
            time.sleep(0.2)
        self.proc.kill()
        raise AssertionError(f"phase not reached in {limit} s:\n{self.out}")

    def held(self) -> bool:
        return self.mark.exists()

    def terminate(self) -> float:
        """SIGTERM to the driver alone (as `kill -TERM PID`); seconds until it exited."""
        sent = time.time()
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=120)
        self.reader.join(timeout=30)
        return time.time() - sent

    def finish(self, limit: float = 600) -> int:
        code = self.proc.wait(timeout=limit)
        self.reader.join(timeout=30)
        return code


def _interrupted(d: Driver, took: float, line: str = "interrupted") -> None:
    assert d.proc.returncode == 1, d.out
    assert took < STOP_WITHIN_S, (took, d.out)
    assert d.out.strip().splitlines()[-1] == line, d.out
    assert "Traceback" not in d.out and "SIGTERM received" not in d.out and "PC: @" not in d.out, d.out


@pytest.mark.ray
def test_sigterm_during_the_data_checks_and_after_rays_start_stops_at_once(tmp_path):
    """Before anything is written (data checks) nothing is; just after ray.init (whose core worker installs a
    SIGTERM handler that dumps and exits 134) it is an interruption all the same, and the run log says so."""
    storage = tmp_path / "store"
    args = ("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--storage", str(storage))
    d = Driver(tmp_path, *args, hold="studies.spec:check_data")
    d.wait_until(d.held, limit=120)
    _interrupted(d, d.terminate())
    assert not storage.exists()  # nothing written
    d = Driver(tmp_path, *args, hold="studies.runner:_resources")
    d.wait_until(d.held, limit=180)
    _interrupted(d, d.terminate(), "interrupted; run the same command again to resume")
    assert not (storage / "tiny" / "driver.lock").exists()


@pytest.mark.ray
def test_sigterm_during_the_baselines_and_the_report_keeps_what_finished_and_resumes_to_the_same_answer(tmp_path):
    """SIGTERM while the driver waits for the classical baselines (the first one scored, the second held in its Ray
    task): exit 1 within seconds, the scored one kept; SIGTERM while the report is written: exit 1; the same command
    then completes without scoring the kept baseline again, and every baseline's scores are those that scoring the
    setting in one go gives."""
    from denoise_core.baselines import score_baselines, setting_key
    from denoise_core.tasks import validate_config
    from studies.spec import load_spec

    storage = tmp_path / "store"
    args = ("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--storage", str(storage))
    scores = storage / "tiny" / "baselines" / "scores.json"

    d = Driver(tmp_path, *args, hold="denoise_core.baselines:Setting.score:1")
    # the trials are done and the driver waits (its line), and the second baseline is held (the mark): the first
    # one's scores are then in the queue, which the line alone does not promise (it may be the first one's start)
    d.wait_until(lambda: "classical baselines: setting 1/1" in d.out and d.held())
    _interrupted(d, d.terminate(), "interrupted; run the same command again to resume")
    stored = json.loads(scores.read_text())
    assert stored["entries"] == {} and len(stored["partial"]) == 1, stored
    (first, kept), = next(iter(stored["partial"].values())).items()  # the one scored before the hold

    d = Driver(tmp_path, *args, hold="reports.build:build_report,denoise_core.baselines:Setting.score:never")
    d.wait_until(d.held)
    _interrupted(d, d.terminate(), "interrupted; run the same command again to resume")
    assert not (storage / "tiny" / "report.html").exists()
    scored = d.calls.read_text()  # each baseline this run scored: every one but the kept one
    assert f"name='{first}'" not in scored and scored.count("Setting.score") >= 1, scored

    d = Driver(tmp_path, *args)
    assert d.finish() == 0, d.out
    assert "is complete (budget smoke); rebuilding its report" in d.out and (storage / "tiny" / "report.html").exists()
    stored = json.loads(scores.read_text())
    assert stored["partial"] == {} and len(stored["entries"]) == 1, stored
    entry = next(iter(stored["entries"].values()))
    spec = load_spec(str(DATA / "tiny.yaml"))
    cfg = validate_config(spec.cell_config(spec.cells()[0], "smoke", {})).model_dump()
    assert setting_key(cfg) in stored["entries"]
    whole = score_baselines(cfg, showcase=False)
    assert entry["metrics"][first] == kept
    for name, m in whole["metrics"].items():
        assert entry["metrics"][name]["param"] == m["param"], name
        assert entry["metrics"][name]["test"] == pytest.approx(m["test"], abs=1e-9), name
    assert entry["best"] == whole["best"]


def test_sigterm_during_evaluate_stops_at_once_and_writes_nothing(tmp_path):
    root = tmp_path / "data"
    standard_set(root, "Set12")
    csv = tmp_path / "out.csv"
    d = Driver(tmp_path, "evaluate", "--test", "Set12", "--data-root", str(root), "--noise", "gaussian:sigma=25",
               "--csv", str(csv), hold="denoise_core.baselines:score_set", own_ray=False)
    d.wait_until(d.held, limit=120)
    _interrupted(d, d.terminate())
    assert not csv.exists()
