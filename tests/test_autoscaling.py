"""The cluster.yaml path on Ray's fake multi-node autoscaler: a head with no trial resources, GPU workers
from zero, added as trials ask for them and released when idle.

Ray's own `AutoscalingCluster` runs `ray stop --force` when it starts and stops, which ends every Ray on
the machine (a user's running study included). This one starts its head in its own session, with its
own temp dir, ports and namespace, and stops only the processes it started."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import DATA, cli, ray_tmp

pytestmark = [pytest.mark.autoscaling, pytest.mark.ray]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IsolatedAutoscalingCluster:
    """`ray start --head` with the fake multi-node provider, in a process group and temp dir of its own."""

    def __init__(self, worker_node_types: dict, idle_timeout_minutes: float):
        self.temp, self.port = ray_tmp(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        head = {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}  # like cluster.yaml's head
        self.config = {
            "cluster_name": f"fake-{self.port}", "max_workers": 8, "head_node_type": "ray.head.default",
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": self.address},
            "available_node_types": {**worker_node_types, "ray.head.default": head},
            "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": idle_timeout_minutes, "docker": {},
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [],
            **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")}}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cfg = Path(self.temp) / "autoscaler.json"
        cfg.write_text(json.dumps(self.config))
        env = os.environ | {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_TMPDIR": self.temp}
        env.pop("RAY_ADDRESS", None)
        ray_cli = str(Path(sys.executable).parent / "ray")
        self.proc = subprocess.Popen(
            [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}", f"--temp-dir={self.temp}",
             "--num-cpus=0", "--include-dashboard=false", f"--dashboard-agent-listen-port={free_port()}",
             f"--ray-client-server-port={free_port()}", f"--autoscaling-config={cfg}"],
            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, out

    def processes(self) -> list:
        """Every process of this cluster: its session's process group, and anything naming its temp dir."""
        import psutil

        mine = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getpgid(p.pid) == self.proc.pid or self.temp in " ".join(p.info["cmdline"] or []):
                    mine.append(p)
            except (ProcessLookupError, psutil.Error):
                continue
        return [p for p in mine if p.pid != os.getpid()]

    def shutdown(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass


def test_study_runs_on_gpu_workers_the_autoscaler_starts_and_releases(tmp_path):
    import ray

    cluster = IsolatedAutoscalingCluster(
        worker_node_types={"gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {},
                                          "min_workers": 0, "max_workers": 2}},
        idle_timeout_minutes=0.1)
    cluster.start()
    try:
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False, namespace="autoscaling-test")
        assert ray.cluster_resources().get("GPU", 0) == 0  # no worker yet: they come as trials ask for them
        # no --max-concurrent: concurrency follows the cluster as the autoscaler grows it from zero workers
        code, out, err = cli("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--storage", str(tmp_path),
                             "--address", cluster.address, "--gpus-per-trial", "0.25", "--quiet")
        assert code == 0, out + err
        df = pd.read_parquet(tmp_path / "tiny" / "trials.parquet")
        assert len(df) == 8 and set(df.status) <= {"completed", "stopped"} and (df.gpus == 0.25).all()
        head = ray.get_runtime_context().get_node_id()
        assert head not in set(df.node_id) and df.node_id.nunique() == 2  # both autoscaled workers ran trials
        iv = sorted(zip(df.start, df.end))
        assert any(s2 < e1 for (_, e1), (s2, _) in zip(iv, iv[1:])), "trials never ran at the same time"
        deadline = time.time() + 120
        while time.time() < deadline and sum(n["Alive"] for n in ray.nodes()) > 1:
            time.sleep(2)
        assert sum(n["Alive"] for n in ray.nodes()) == 1, "idle GPU workers were not released"
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert cluster.processes() == []  # everything it started is gone, and nothing else was touched
