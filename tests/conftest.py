"""Shared fixtures: a real multi-node Ray cluster on loopback, and CLI helpers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def ray_cluster():
    """A head node (2 CPUs) and one worker node (2 CPUs) on this machine, as separate raylets."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def cli(*args: str) -> tuple[int, str, str]:
    """Run the real console entry point in-process; return (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from studies.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def cli_process(*args: str, **kw) -> subprocess.Popen:
    """The console script as its own process (in its own session, so it can be killed whole)."""
    exe = Path(sys.executable).parent / "denoise-study"
    return subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


@pytest.fixture(scope="session")
def n2n_smoke(ray_cluster, tmp_path_factory):
    """The smoke budget of n2n_loss through the real CLI on the local cluster, shared by several tests."""
    storage = tmp_path_factory.mktemp("storage")
    code, out, err = cli("run", "n2n_loss", "--budget", "smoke", "--storage", str(storage),
                         "--address", ray_cluster.address, "--quiet")
    assert code == 0, out + err
    return storage / "n2n_loss", out
