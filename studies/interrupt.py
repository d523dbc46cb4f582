"""SIGINT, SIGTERM and SIGHUP stop every phase of a command the same way: an interruption.

Slurm, Kubernetes, systemd, a spot reclaim and a closed terminal stop a job with SIGTERM or SIGHUP (Kubernetes
sends SIGKILL 30 s later), a person with Ctrl-C. Each becomes a KeyboardInterrupt in the main thread, whichever
phase the command is in (data checks, Ray's start, the trials, the classical baselines, the report, `evaluate`),
and the command says "interrupted" in one line and exits 1, keeping what it finished.

    stop_on_signals()              # at the command's start, and again after ray.init (whose core worker
                                   # installs a SIGTERM handler of its own: a signal dump, exit 134)
    with tune_stops_gracefully():  # around Tuner.fit: Tune's own SIGINT handler stops the trials cleanly
        tuner.fit()

Tune installs its SIGINT handler inside `fit` and puts the old one back only when a signal comes: after a
`fit` that ended by itself its handler stays, and a signal then would only set a flag nobody reads (a SIGTERM
during the baselines was ignored for a minute). So `tune_stops_gracefully` puts ours back on the way out.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """From now on SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread."""
    for sig in SIGNALS:
        signal.signal(sig, _interrupt)


def _forward(signum, frame):
    """SIGTERM and SIGHUP go where SIGINT goes now: Tune's graceful stop while it runs, else an interruption."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler) or handler is _interrupt:
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


@contextmanager
def tune_stops_gracefully():
    """While Tune runs the trials: SIGINT is left to the handler Tune installs, SIGTERM and SIGHUP forwarded to it.
    Afterwards every signal is an interruption again (`stop_on_signals`), whatever Tune left installed."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what Tune saves and restores after a first signal
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _forward)
    try:
        yield
    finally:
        stop_on_signals()
