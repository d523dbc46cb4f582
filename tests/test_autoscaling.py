"""The cluster.yaml path on Ray's fake multi-node autoscaler: a head with no trial resources, GPU workers
from zero, added as trials ask for them and released when idle.

Ray's own `AutoscalingCluster` runs `ray stop --force` when it starts and stops, which ends every Ray on
the machine (a user's running study included). This one starts its head with tests.cluster.IsolatedHead:
its own session, temp dir, ports and namespace, and it stops only the processes it started."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.cluster import IsolatedHead
from tests.conftest import DATA, cli

pytestmark = [pytest.mark.autoscaling, pytest.mark.ray]


def autoscaling_head(worker_node_types: dict, idle_timeout_minutes: float) -> IsolatedHead:
    """A head with no trial resources (like cluster.yaml's) and Ray's fake multi-node provider as autoscaler."""
    head = IsolatedHead("--num-cpus=0", env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    config = {
        "cluster_name": f"fake-{head.port}", "max_workers": 8, "head_node_type": "ray.head.default",
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": head.address},
        "available_node_types": {**worker_node_types,
                                 "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}},
        "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": idle_timeout_minutes, "docker": {},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                           "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")}}
    cfg = Path(head.temp) / "autoscaler.json"
    cfg.write_text(json.dumps(config))
    head.args.append(f"--autoscaling-config={cfg}")
    return head


def test_study_runs_on_gpu_workers_the_autoscaler_starts_and_releases(tmp_path):
    import ray

    cluster = autoscaling_head(
        worker_node_types={"gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {},
                                          "min_workers": 0, "max_workers": 2}},
        idle_timeout_minutes=0.1).start()
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
    assert cluster.gone(), cluster.processes()  # everything it started is gone, and nothing else was touched
