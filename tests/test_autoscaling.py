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


def test_study_runs_on_gpu_workers_the_autoscaler_starts_and_releases(tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import AutoscalingCluster

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # the `ray` CLI
    cluster = AutoscalingCluster(
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
