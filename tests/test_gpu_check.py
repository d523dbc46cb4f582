"""`make gpu-check` runs benchmarks/gpu_check.py on a GPU; here its `--dry-run` runs the same stages on a CPU at
tiny sizes, so the script a session lent a GPU depends on cannot rot between those sessions."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, ray_env

pytestmark = pytest.mark.ray


def test_the_gpu_check_runs_its_stages_in_order_and_writes_each_result_as_it_comes(tmp_path):
    from studies.spec import catalog_names

    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)], cwd=ROOT,
                          env=ray_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (tmp_path / "results.md").read_text().splitlines()[1:]
    assert lines == proc.stdout.splitlines()  # what was printed is what was kept, line by line
    kinds = [ln.split(":")[0].removesuffix(" full").removesuffix(" smoke") for ln in lines[:-1]]
    assert kinds == ["device", "gpu tests", *catalog_names(), "n2n_loss"] and lines[-1].startswith("gpu-check done in")
    assert re.match(r"gpu tests: \d+ skipped", lines[1])  # no CUDA here: every gpu test skips, and says so
    for ln in lines[2:2 + len(catalog_names())]:
        m = re.search(r"\*\*([\d.]+) steps/s\*\* -> ([\d,]+) steps = ([\d.]+) min a trial; (\d+) trials at ([\d.]+) GPU "
                      r"= ([\d.]+) GPU-hours; one hour on one GPU fits ([\d,]+) steps a trial", ln)
        assert m, ln
        rate, steps, trial_min = float(m[1]), int(m[2].replace(",", "")), float(m[3])
        assert trial_min == pytest.approx(steps / rate / 60, rel=0.01, abs=0.06)  # the sizing follows from the rate
    assert re.match(r"n2n_loss smoke: \*\*\d+ s wall\*\* \(exit 0", lines[-2]), lines[-2]
    assert (tmp_path / "gpu-tests.log").exists() and (tmp_path / "study.log").exists()
