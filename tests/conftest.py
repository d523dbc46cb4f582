"""Shared fixtures: a real multi-node Ray cluster on loopback, and CLI helpers.

Tests share the machine with the user's own studies: every Ray a test starts has its own temporary
directory (short: Ray's socket paths must stay under 107 characters), random ports and its own
namespace, and a test stops only the Ray it started. `ray_env()` is the environment for a CLI process
that starts a Ray of its own (no address): never the user's RAY_ADDRESS, always a private temp dir.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

def _private_ray_default() -> str:
    """Ray writes the address of a cluster it starts (`ray.cluster_utils.Cluster`, `ray.init`) to
    `<default temp dir>/ray/ray_current_cluster`, whatever temp dir the head was given, and does not
    create that folder: on a machine where Ray never ran, `/tmp/ray` is missing and the write fails. The
    suite points Ray's default temp dir ($RAY_TMPDIR) at a folder of its own, with `ray/` made, removed
    at exit: nothing is written to /tmp/ray, and no state an earlier run left there can help a test pass."""
    path = tempfile.mkdtemp(prefix="dss-", dir="/tmp")  # short: Ray's socket paths stay under 107 characters
    os.makedirs(os.path.join(path, "ray"))
    import atexit

    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


os.environ["RAY_TMPDIR"] = _private_ray_default()

# Ray 2.5x enables token authentication for a new local cluster and writes ~/.ray/auth_token: the suite's
# clusters are on loopback and must not touch the user's home, so they run without (the job-submission
# test's head has a private token of its own, presented as a user's client would)
os.environ["RAY_AUTH_MODE"] = "disabled"

DATA = Path(__file__).parent / "data"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
ROOT = Path(__file__).parent.parent


def ray_tmp() -> str:
    """A private, short temp dir for one Ray (removed at exit)."""
    path = tempfile.mkdtemp(prefix="dsr-", dir="/tmp")
    import atexit

    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def ray_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return env | {"RAY_TMPDIR": ray_tmp(), "PYTHONPATH": str(ROOT)} | extra


@pytest.fixture(scope="session")
def ray_cluster():
    """A head node (2 CPUs) and one worker node (2 CPUs) on this machine, as separate raylets."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    temp = ray_tmp()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False, "temp_dir": temp})
    cluster.add_node(num_cpus=2, temp_dir=temp)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def cli(*args: str) -> tuple[int, str, str]:
    """Run the real console entry point in-process; return (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from denoise_study.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def smoke_study(name: str, address: str, tmp_path: Path, trials: int):
    """Run catalog study `name` at its smoke budget on the cluster at `address`; assert it exits 0 with `trials`
    trials, every confirm run completed. (its folder, its trials table, the report's DOM as Chromium has it)."""
    import pandas as pd

    from tests import browser

    code, out, err = cli("run", name, "--budget", "smoke", "--storage", str(tmp_path / "store"), "--address", address,
                         "--quiet")
    assert code == 0, out + err
    sdir = tmp_path / "store" / name
    df = pd.read_parquet(sdir / "trials.parquet")
    assert len(df) == trials and set(df[df.phase == "confirm"].status) == {"completed"}
    dom, errors = browser.load(sdir / "report.html") if browser.chromium() else ((sdir / "report.html").read_text(), [])
    assert not errors
    return sdir, df, dom


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


@pytest.fixture(scope="session")
def tiny_race(ray_cluster, tmp_path_factory):
    """tests/data/tiny.yaml at the smoke budget, started by two drivers within milliseconds on one storage that a
    user's files surround (another study, notes beside it, a file beside the root). Shared by the two-driver test,
    the file-safety test and the resume test (whose uninterrupted reference it is)."""
    import json
    from types import SimpleNamespace

    top = tmp_path_factory.mktemp("guarded")
    storage = top / "studies"
    (storage / "other_study").mkdir(parents=True)
    (storage / "other_study" / "study.json").write_text(json.dumps({"spec": {"name": "other_study"}}))
    (storage / "notes.txt").write_text("my notes")
    (top / "beside-the-root.txt").write_text("keep me")
    before = {p.relative_to(top): p.read_bytes() for p in top.rglob("*") if p.is_file()}
    procs = [cli_process("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--storage", str(storage),
                         "--address", ray_cluster.address, "--quiet") for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    return SimpleNamespace(top=top, storage=storage, before=before, codes=[p.returncode for p in procs], outs=outs)


# -- the bystander: a study in a Ray of its own that must survive the whole suite ----------------
BYSTANDER_TEST = "test_a_study_in_another_ray_survived_the_whole_suite"
_bystander: dict = {}


def pytest_collection_modifyitems(session, config, items):
    """When the bystander's test is selected: start the bystander study now, before any test runs, and
    move its test to the very end, so every other test runs while the study does."""
    mine = [i for i in items if i.name == BYSTANDER_TEST]
    if not mine:
        return
    items.remove(mine[0])
    items.append(mine[0])
    storage = tempfile.mkdtemp(prefix="bystander-")
    env = ray_env()
    _bystander.update(storage=Path(storage), env=env, started=__import__("time").time(),
                      proc=cli_process("run", str(DATA / "bystander.yaml"), "--budget", "quick", "--storage", storage,
                                       "--quiet", env=env, cwd=ROOT))


@pytest.fixture(scope="session")
def bystander() -> dict:
    if not _bystander:
        pytest.skip("the bystander study starts only when its test is collected")
    return _bystander

