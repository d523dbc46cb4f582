"""study.json: a study's plan, and one entry per run of it (each `denoise-study run` that did work).

A run records when it started, a heartbeat while it runs, and when and how it ended: finished,
stopped early, interrupted (Ctrl-C), failed, or killed. A killed driver writes nothing more, so its
run is closed by the next run (or read by the report) at its last heartbeat: the time it really ran.
No Ray here: the report and `status` read it too.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from studies.documents import RunInfo, StudyInfo
from studies.heartbeat import Heartbeat
from studies.store import read_info

HEARTBEAT_S = 10.0
STALE_S = 60.0  # a run whose heartbeat is older than this, and that has no end, was killed


def run_span(run: RunInfo, now: float | None = None) -> tuple[float, str]:
    """(seconds the run really ran, how it ended): a run without an end is 'running' while its heartbeat
    is fresh, else 'killed' at its last heartbeat."""
    now = time.time() if now is None else now
    if run.end:
        return run.end - run.start, run.ended or "finished"
    beat = run.heartbeat or run.start
    if now - beat > STALE_S or _dead_here(run):
        return beat - run.start, "killed"
    return now - run.start, "running"


def _dead_here(run: RunInfo) -> bool:
    """The run's driver was on this host and its process is gone (no need to wait for a stale heartbeat)."""
    from studies.lock import pid_alive

    return run.host == socket.gethostname() and run.pid is not None and not pid_alive(run.pid)


class RunLog:
    """The driver's side of study.json: `start(**plan)`, a heartbeat thread, `close(how)`."""

    def __init__(self, sdir: Path, remote: str | None = None):
        self.path = Path(sdir) / "study.json"
        self.remote = remote  # object storage: study.json is pushed there at every change and every few beats
        self.info: StudyInfo | None = None
        self._lock = threading.Lock()
        self._heart: Heartbeat | None = None
        self._beats = 0

    def start(self, **plan) -> StudyInfo:
        old = read_info(self.path.parent) if self.path.exists() else None
        runs = old.runs if old is not None else []
        for run in runs:  # an earlier driver that was killed: close its run at its last heartbeat
            if not run.end:
                seconds, how = run_span(run, now=float("inf"))
                run.end, run.ended = run.start + seconds, how
        command, resources = plan.pop("command", ""), plan.pop("resources", {})
        nodes, versions = plan.pop("nodes", None), plan.pop("versions", {})
        now = time.time()
        run = RunInfo(start=now, heartbeat=now, command=command, host=socket.gethostname(), pid=os.getpid(),
                      resources=resources, nodes=nodes, versions=versions)
        info = StudyInfo(**plan, runs=[run]) if old is None else old.model_copy(update={**plan, "runs": [*runs, run]})
        self.info = info
        self._write(push=True)
        self._heart = Heartbeat(self._beat, HEARTBEAT_S, "denoise-study-runlog").start()
        return info

    def close(self, how: str) -> None:
        if self._heart is not None:
            self._heart.stop()
        with self._lock:
            self.info.runs[-1].end, self.info.runs[-1].ended = time.time(), how
        self._write(push=True)

    def _beat(self) -> None:
        self._beats += 1
        with self._lock:
            self.info.runs[-1].heartbeat = time.time()
        self._write(push=self._beats % 3 == 0)

    def _write(self, push: bool) -> None:
        with self._lock:
            self.info.write(self.path)
        if push and self.remote:
            from studies.remote import upload

            try:
                upload(self.path.parent, self.remote, ("study.json",))
            except OSError:  # an unreachable store for a moment: the next push carries it
                pass
