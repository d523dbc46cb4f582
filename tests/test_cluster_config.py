"""cluster.yaml and cluster-local.yaml pass Ray's own autoscaler validation, offline."""
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_cluster_config_validates(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / name).read_text())
    config = prepare_config(raw)
    validate_config(config)
    # the working copy itself travels (file_mounts) and is installed from where it lands: no URL to edit
    assert config["file_mounts"] == {"~/denoise-study": "."}
    assert {".venv", ".git", "test-artifacts"} <= set(config["rsync_exclude"])
    assert any("pip install" in cmd and "-e ~/denoise-study" in cmd for cmd in config["setup_commands"])
    assert "git+" not in (ROOT / name).read_text() and "YOUR-ORG" not in (ROOT / name).read_text()
    head_cmds = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds  # the dashboard is not exposed beyond the head


def test_aws_cluster_has_cpu_head_and_gpu_spot_workers():
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"] == {"CPU": 0}
    worker = types["gpu_worker"]
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" and worker["max_workers"] >= 1
