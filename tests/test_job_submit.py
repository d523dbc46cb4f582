"""The README's `ray job submit --working-dir .` path, against a local head with Ray's job server (ray[default]):
the working copy travels to the cluster, the study runs as a Ray job, its results land in the storage given."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.cluster import IsolatedHead
from tests.conftest import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.cluster]


def test_a_study_submitted_as_a_ray_job_with_the_working_dir_runs_and_reports(tmp_path):
    pytest.importorskip("ray.dashboard.modules.job.sdk", reason="ray job submit needs ray[default]")
    head = IsolatedHead("--num-cpus=2", dashboard=True, token=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | head.client_env | {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        r = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", head.dashboard_url,
             "--working-dir", str(ROOT), "--", "denoise-study", "run", "tests/data/tiny.yaml", "--budget", "smoke",
             "--address", "auto", "--storage", str(tmp_path), "--quiet"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and "succeeded" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
        assert f"report: {tmp_path / 'tiny' / 'report.html'}" in r.stdout
    finally:
        head.shutdown()
    df = pd.read_parquet(tmp_path / "tiny" / "trials.parquet")
    assert len(df) == 8 and set(df.status) <= {"completed", "stopped"}
    run = json.loads((tmp_path / "tiny" / "study.json").read_text())["runs"][-1]
    assert run["ended"] == "finished" and run["nodes"] == 1
    assert head.gone(), head.processes()
