"""One heartbeat: a daemon thread that calls `beat()` every `every` seconds until stopped, or until `beat`
returns False. The driver lock and the run log keep themselves fresh with it (a dead driver's stale
heartbeat is how the next run, `status` and the report know it was killed)."""
from __future__ import annotations

import threading
from typing import Callable


class Heartbeat:
    def __init__(self, beat: Callable[[], bool | None], every: float, name: str):
        self._beat, self.every = beat, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self._beat() is False:
                return

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
