"""A Ray head of a test's own, started with `ray start` as a user would: its own temp dir, session (process
group), ports (GCS, client server, dashboard, dashboard agent) and authentication token (Ray 2.5x protects
its servers with one; `client_env` lets a client such as `ray job submit` present it), and a shutdown that
stops only the processes it started. `ray stop` would stop every Ray of this user on the machine, a running
study included."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ray_tmp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IsolatedHead:
    def __init__(self, *args: str, env: dict | None = None, dashboard: bool = False, token: bool = False):
        self.temp, self.port = ray_tmp(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_port = free_port() if dashboard else None
        self.args, self.extra_env = list(args), env or {}
        self.pgid: int | None = None
        self.client_env = {"RAY_AUTH_MODE": "disabled"}
        if token:
            path = Path(self.temp) / "auth_token"
            path.write_text(__import__("secrets").token_hex(32))
            path.chmod(0o600)
            self.client_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> "IsolatedHead":
        env = os.environ | {"RAY_TMPDIR": self.temp, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        env.pop("RAY_ADDRESS", None)
        dash = (["--include-dashboard=true", f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1"]
                if self.dashboard_port else ["--include-dashboard=false"])
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
             f"--port={self.port}", f"--temp-dir={self.temp}", f"--ray-client-server-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}", *dash, *self.args],
            env=env | self.client_env | self.extra_env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = proc.communicate(timeout=180)
        self.pgid = proc.pid
        assert proc.returncode == 0, out
        return self

    def processes(self) -> list:
        """This head's processes: its session's process group, and anything naming its temp dir."""
        import psutil

        mine = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if p.info["status"] == psutil.STATUS_ZOMBIE:  # dead, waiting for a parent (or init) to reap it
                    continue
                if p.pid != os.getpid() and (os.getpgid(p.pid) == self.pgid
                                             or self.temp in " ".join(p.info["cmdline"] or [])):
                    mine.append(p)
            except (ProcessLookupError, psutil.Error):
                continue
        return mine

    def gone(self, timeout: float = 20) -> bool:
        """True once none of its processes is left (a process being torn down takes a moment)."""
        import time

        deadline = time.time() + timeout
        while self.processes():
            if time.time() > deadline:
                return False
            time.sleep(0.5)
        return True

    def shutdown(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
