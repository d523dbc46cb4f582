"""The HTML report, loaded in headless Chromium."""
import json
import shutil

import pytest
import yaml

from tests import browser
from tests.conftest import ARTIFACTS, DATA, cli

pytestmark = [pytest.mark.ray, pytest.mark.browser]
if browser.chromium() is None:
    pytest.skip("NO CHROMIUM: install Debian's 'chromium' package (make browser) to run the report's browser tests",
                allow_module_level=True)


def test_n2n_report_renders_every_figure(n2n_smoke):
    from reports.build import build_report

    sdir, _ = n2n_smoke
    path = build_report(sdir)
    html = path.read_text()
    # offline: plotly.js is inline, nothing is loaded from elsewhere
    import re

    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html)
    assert html.count("<script>") >= 1 and '<script src=' not in html
    dom, errors = browser.load(path, ARTIFACTS / "n2n_loss_smoke_report.png")
    assert errors == []
    # heatmap + bars + learning curves + parallel coordinates + one Optuna history per cell (15)
    expected = 1 + 1 + 1 + 1 + 15
    assert browser.figure_divs(dom) == expected
    assert browser.rendered_figures(dom) == expected
    assert 'id="findings"' in dom and "loss=" in dom and "95% CI" in dom
    order = [dom.index(f'id="{s}"') for s in ("findings", "comparison", "images", "curves", "tuning", "best", "run")]
    assert order == sorted(order)
    assert dom.count('<img alt="loss=') + dom.count('<img alt="noise=') == 15  # one clean/noisy/output grid per cell


def test_description_is_escaped_in_the_browser(ray_cluster, tmp_path):
    spec = yaml.safe_load((DATA / "tiny.yaml").read_text())
    spec["name"] = "tiny_xss"
    spec["description"] = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"
    spec["budgets"]["smoke"].update(trials_per_cell=1, seeds=1, steps=4, eval_every=2)
    (tmp_path / "xss.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = cli("run", str(tmp_path / "xss.yaml"), "--budget", "smoke", "--storage", str(tmp_path / "s"),
                         "--address", ray_cluster.address, "--quiet")
    assert code == 0, out + err
    dom, errors = browser.load(tmp_path / "s" / "tiny_xss" / "report.html")
    assert "<title>tiny_xss report</title>" in dom and "PWNED</title>" not in dom
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom and errors == []


def test_partial_study_shows_banner_and_failures(n2n_smoke, tmp_path):
    from reports.build import build_report

    sdir, _ = n2n_smoke
    part = tmp_path / "n2n_loss"
    shutil.copytree(sdir, part)
    recs = sorted((part / "records").glob("*.json"))
    running, failed = json.loads(recs[0].read_text()), json.loads(recs[1].read_text())
    running.update(status="running", end=None, history=running["history"][:1])
    failed.update(status="failed", error="FloatingPointError: non-finite training loss (inf) at step 3")
    recs[0].write_text(json.dumps(running))
    recs[1].write_text(json.dumps(failed))
    dom, errors = browser.load(build_report(part))
    assert errors == [] and 'id="partial"' in dom and "44 of 45 planned trials have finished (1 running)" in dom
    assert 'id="failures"' in dom and "non-finite training loss (inf) at step 3" in dom


def test_ddpm_study_runs_through_ray_and_reports_samples_schedules_and_psnr(ray_cluster, tmp_path):
    """The catalog's ddpm_schedule spec, cut to two schedules x one T x one prediction, at smoke size."""
    spec = yaml.safe_load((DATA.parent.parent / "studies" / "catalog" / "ddpm_schedule.yaml").read_text())
    spec["name"] = "ddpm_tiny"
    spec["compare"] = {"schedule": ["linear", "cosine"], "T": {"50": {"timesteps": 50}}, "prediction": ["eps"]}
    spec["budgets"]["smoke"].update(trials_per_cell=1, seeds=2)
    (tmp_path / "ddpm.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, err = cli("run", str(tmp_path / "ddpm.yaml"), "--budget", "smoke", "--storage", str(tmp_path / "s"),
                         "--address", ray_cluster.address)
    assert code == 0, out + err
    assert "bits_per_dim" in out  # progress lines show the study's metric
    import pandas as pd

    sdir = tmp_path / "s" / "ddpm_tiny"
    df = pd.read_parquet(sdir / "trials.parquet")
    assert len(df) == 2 * (1 + 2) and set(df.status) == {"completed"}
    assert (df["final.bits_per_dim"] > 0).all() and df["final.psnr_reverse_sigma25"].notna().all()
    for cell in ("schedule=linear,T=50,prediction=eps", "schedule=cosine,T=50,prediction=eps"):
        best = sdir / "best" / cell
        assert {"samples.png", "progress.png", "model.pt"} <= {p.name for p in best.iterdir()}, list(best.iterdir())
    dom, errors = browser.load(sdir / "report.html", ARTIFACTS / "ddpm_smoke_report.png")
    assert errors == []
    assert "noise schedules" in dom and "bits/dim" in dom
    assert "mean psnr_sigma25" in dom and "mean psnr_reverse_sigma25" in dom  # PSNR beside the compared metric
    assert dom.count("(samples)") == 2 and dom.count("(progress)") == 2
    assert browser.rendered_figures(dom) == browser.figure_divs(dom) >= 4
    # the study's best DDPM denoises a user's image at a given noise level, and asks for that level
    import numpy as np
    import torch
    from PIL import Image

    from denoise_core.data import load_dataset
    from denoise_core.metrics import psnr

    x = load_dataset("digits", split="val")[:1]
    noisy = (x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    Image.fromarray((noisy[0, 0].numpy() * 255).round().astype(np.uint8)).save(tmp_path / "noisy.png")
    args = ("denoise", "--study", "ddpm_tiny", "--storage", str(tmp_path / "s"), str(tmp_path / "noisy.png"))
    code, out, err = cli(*args, "-o", str(tmp_path / "no-sigma.png"))
    assert code == 2 and "pass --sigma" in err and not (tmp_path / "no-sigma.png").exists()
    code, out, err = cli(*args, "-o", str(tmp_path / "den.png"), "--sigma", "25")
    assert code == 0, out + err
    den = torch.from_numpy(np.asarray(Image.open(tmp_path / "den.png").convert("L"), dtype=np.float32) / 255)
    assert den.shape == (32, 32) and torch.isfinite(psnr(den[None, None], x)).all()
