"""Fault tolerance on the local multi-node cluster."""
import pandas as pd
import pytest
import yaml

from tests.conftest import DATA, cli

pytestmark = [pytest.mark.ray, pytest.mark.cluster]


def test_failing_trial_is_retried_then_recorded_and_study_reports(ray_cluster, tmp_path):
    spec = yaml.safe_load((DATA / "tiny.yaml").read_text())
    spec["name"] = "tiny_faults"
    spec["compare"] = {"noise": {"ok": {"noise_params": {"sigma": 25}},
                                 "overflow": {"noise_params": {"sigma": 1e38}}}}  # loss overflows to inf
    spec["budgets"]["smoke"].update(trials_per_cell=1, seeds=1, max_failures=1)
    (tmp_path / "faults.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = cli("run", str(tmp_path / "faults.yaml"), "--budget", "smoke", "--storage", str(tmp_path / "s"),
                         "--address", ray_cluster.address)
    assert code == 0, out + err
    df = pd.read_parquet(tmp_path / "s" / "tiny_faults" / "trials.parquet")
    assert len(df) == 4  # every planned trial has exactly one row
    bad = df[df["factor.noise"] == "overflow"]
    assert set(bad.status) == {"failed"} and (bad.attempts == 2).all()  # one retry (max_failures=1), then failed
    assert bad.error.str.contains("non-finite training loss").all()
    assert set(df[df["factor.noise"] == "ok"].status) == {"completed"}
    assert "failed: FloatingPointError: non-finite training loss" in out
    html = (tmp_path / "s" / "tiny_faults" / "report.html").read_text()
    assert 'id="failures"' in html and "non-finite training loss" in html
