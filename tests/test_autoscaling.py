"""The cluster.yaml path on Ray's own autoscaling test cluster: a head with no trial resources, GPU workers
from zero. `AutoscalingCluster.start` runs `ray stop --force`, which would end every other Ray on this
machine, so this module runs in its own pytest process after the rest (`make test` does both)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import DATA, cli

pytestmark = [pytest.mark.autoscaling, pytest.mark.ray]


def fake_cluster(head_resources: dict, worker_node_types: dict, idle_timeout_minutes: float):
    """Ray's AutoscalingCluster with its fake-multinode provider. Its base config is a YAML file that Ray's
    wheel does not ship, so the same config is written out here."""
    from ray.cluster_utils import AutoscalingCluster

    class Cluster(AutoscalingCluster):
        def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
            head = {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}
            return {"cluster_name": "fake_multinode", "max_workers": 8, "head_node_type": "ray.head.default",
                    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                                 "disable_launch_config_check": True},
                    "available_node_types": {**worker_node_types, "ray.head.default": head},
                    "auth": {}, "upscaling_speed": 1.0, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
                    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
                    **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                                       "worker_setup_commands", "head_start_ray_commands",
                                       "worker_start_ray_commands")},
                    **config_kwargs}

    return Cluster(head_resources, worker_node_types, idle_timeout_minutes=idle_timeout_minutes)


def test_study_runs_on_gpu_workers_the_autoscaler_starts_and_releases(tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # the `ray` CLI
    cluster = fake_cluster(
        head_resources={"CPU": 0},  # like cluster.yaml's head: the driver only, never a trial
        worker_node_types={"gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {},
                                          "min_workers": 0, "max_workers": 2}},
        idle_timeout_minutes=0.1)
    cluster.start()
    try:
        ray.init("auto", logging_level="ERROR", log_to_driver=False)
        assert ray.cluster_resources().get("GPU", 0) == 0  # no worker yet: they come as trials ask for them
        code, out, err = cli("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--storage", str(tmp_path),
                             "--address", "auto", "--gpus-per-trial", "0.25", "--max-concurrent", "2", "--quiet")
        assert code == 0, out + err
        df = pd.read_parquet(tmp_path / "tiny" / "trials.parquet")
        assert len(df) == 8 and set(df.status) <= {"completed", "stopped"} and (df.gpus == 0.25).all()
        head = ray.get_runtime_context().get_node_id()
        assert head not in set(df.node_id)  # every trial ran on a worker the autoscaler started
        deadline = time.time() + 120
        while time.time() < deadline and sum(n["Alive"] for n in ray.nodes()) > 1:
            time.sleep(2)
        assert sum(n["Alive"] for n in ray.nodes()) == 1, "idle GPU workers were not released"
    finally:
        ray.shutdown()
        cluster.shutdown()
