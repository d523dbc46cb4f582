"""The HTML report, loaded in headless Chromium."""
import json
import re
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

    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html)
    assert html.count("<script>") >= 1 and '<script src=' not in html
    dom, errors = browser.load(path, ARTIFACTS / "n2n_loss_smoke_report.png")
    assert errors == []
    # heatmap + bars + learning curves (small multiples) + one tuning view + parallel coordinates + trials at once;
    # no importances (one tuned parameter, one tuning trial per cell: they would mean nothing)
    expected = 6
    assert browser.figure_divs(dom) == expected
    assert browser.rendered_figures(dom) == expected
    assert "Parameter importances are not shown" in dom
    assert "Benjamini-Hochberg" in dom and "held-out test images" in dom  # findings compare test scores
    # 32 test crops of the 8 held-out photographs: the photograph is a level of its own in every comparison
    assert "The 32 test images are crops of 8 source images" in dom
    rows = dom[dom.index('id="comparison-table"'):]
    assert rows.count("32 (crops of 8)") >= 15 and "mixed model over source images, their crops and runs" in rows
    # the same number of crops from each photograph: a comparison's estimate is the difference of the means
    # the page states beside it
    text = re.sub(r"<[^>]+>", "", dom[dom.index('id="answer"'):dom.index('id="comparisons"')])
    gaps = re.findall(r"scores best \(test psnr ([\d.]+) dB\).*?It is ([\d.]+) dB (above|below) the best classical "
                      r"baseline on validation, .*?\(([\d.]+) dB\)", text)  # "TV (Chambolle) (13.6 dB)"
    assert len(gaps) == 5, text
    for best, gap, way, base in gaps:
        assert float(best) - float(base) == pytest.approx(float(gap) * (1 if way == "above" else -1), abs=0.015)
    order = [dom.index(f'id="{s}"') for s in ("method", "verdicts", "answer", "comparisons", "comparison", "images",
                                             "curves", "tuning", "best", "run")]
    assert order == sorted(order)
    # one level, stated once at the top, and no other level anywhere on the page
    level = re.search(r"Every interval on this page is a ([\d.]+%) interval", dom).group(1)
    assert set(re.findall(r"([\d.]+%) (?:CI|interval)", dom)) == {level}
    # the verdict table: one row per claim of the catalog spec, each with a verdict
    table = dom[dom.index('id="verdict-table"'):]
    table = table[:table.index("</table>")]
    assert table.count('<tr class="verdict') == 3 and "Lehtinen et al. 2018" in table
    assert set(re.findall(r'<tr class="verdict ([a-z-]+)"', table)) <= {"reproduced", "contradicted", "inconclusive",
                                                                         "too-few-runs-or-images"}
    # one panel per question: a row per noise, its noisy input, best baseline and each loss's output, PSNR on each
    grid = dom[dom.index('id="image-table"'):]
    grid = grid[:grid.index("</table>")]
    assert grid.count('class="tile"') == 5 * (2 + 3) and grid.count("<tr>") == 1 + 5
    assert len(re.findall(r"<b>[\d.]+ dB</b>", grid)) == 5 * (2 + 3)
    assert len(html) < 3 * 2**20  # plotly once, compressed; small PNGs
    # how it ran: the trials at once against the cluster's slots (two nodes of 2 CPUs, one CPU a trial)
    ran = re.search(r"Trials at once: at most (\d+), ([\d.]+) on average while any ran, on a cluster that held (\d+) at "
                    r"once; a cell's tuning trials ran in waves of q=1\.", dom)
    assert ran and 1 <= int(ran[1]) <= int(ran[3]) == 4 and 1 <= float(ran[2]) <= int(ran[1]), ran


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
    assert errors == [] and 'id="partial"' in dom and "44 of 45 planned trials have finished (1 interrupted, " \
        "and no run is going on: the same command resumes the study)" in dom  # its driver is gone: not running
    assert 'id="failures"' in dom and "non-finite training loss (inf) at step 3" in dom


def test_ddpm_study_runs_through_ray_and_reports_samples_schedules_and_psnr(ray_cluster, tmp_path):
    """The catalog's ddpm_schedule spec, cut to two schedules x one T x one prediction, at smoke size."""
    spec = yaml.safe_load((DATA.parent.parent / "studies" / "catalog" / "ddpm_schedule.yaml").read_text())
    spec["name"] = "ddpm_tiny"
    spec["compare"] = {"schedule": ["linear", "cosine"], "T": {"50": {"timesteps": 50}}, "prediction": ["eps"]}
    spec["expect"][0]["where"] = {"T": "50", "prediction": "eps"}  # the catalog's claim, on the cut study
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
    assert (df["final.bits_per_dim"] > 0).all()
    assert df[df.phase == "confirm"]["final.test_psnr_reverse_sigma25"].notna().all()  # on the test images
    for cell in ("schedule=linear,T=50,prediction=eps", "schedule=cosine,T=50,prediction=eps"):
        best = sdir / "best" / cell
        assert {"samples.png", "progress.png", "model.pt"} <= {p.name for p in best.iterdir()}, list(best.iterdir())
    dom, errors = browser.load(sdir / "report.html", ARTIFACTS / "ddpm_smoke_report.png")
    assert errors == []
    assert "noise schedules" in dom and "bits/dim" in dom and "Nichol &amp; Dhariwal 2021" in dom
    assert "x0-prediction cells" not in dom  # the task's x0-prediction note only where x0 cells exist
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


def _figure_specs(html: str) -> list[dict]:
    return [json.loads(m.replace("<\\/", "</")) for m in
            re.findall(r'<script type="application/json" class="figure-data" data-target="fig-\d+">(.*?)</script>', html, re.S)]


def test_baselines_axes_and_tables_a_researcher_reads(n2n_smoke):
    """Classical baselines on the page and in the answer; every plotted axis titled (in the spec and as drawn);
    table numbers to 3 significant figures."""
    sdir, _ = n2n_smoke
    html = (sdir / "report.html").read_text()
    dom, errors = browser.load(sdir / "report.html")
    assert errors == []
    from studies.analysis import BASELINE_NAMES

    answer = dom[dom.index('id="answer"'):dom.index('id="comparisons"')]
    named = re.findall(r"the best classical baseline on validation, (.+?) \([-\d.]+ dB\)", answer)
    assert len(named) == 5 and set(named) <= set(BASELINE_NAMES.values())  # each noise's best cell against one
    assert "best classical baseline" in dom[dom.index('id="comparison"'):]  # the bars' reference marks
    for spec in _figure_specs(html):
        if any(t.get("type") in ("bar", "scatter", "heatmap") for t in spec["data"]):
            lay = spec["layout"]
            titled = {k[0] for k, v in lay.items() if k.startswith(("xaxis", "yaxis")) and v.get("title", {}).get("text")}
            assert titled == {"x", "y"}, lay.get("title")
    assert dom.count('class="g-xtitle"') >= 4 and dom.count('class="g-ytitle"') >= 4  # drawn, not only declared
    for cell in re.findall(r'<td class="num">([^<]*)</td>', html):
        digits = re.sub(r"e[+-]\d+$", "", cell).replace(",", "").replace("-", "").replace(".", "").lstrip("0")
        assert len(digits) <= 3 or "," in cell, cell  # 3 significant figures (integers such as 1,234 aside)


def test_any_label_text_survives_and_markup_is_escaped_in_the_browser(ray_cluster, tmp_path):
    """Levels named with commas, equals signs, quotes and unicode: the study runs, and the report shows them. A
    description and a claim holding markup are shown as text, never run."""
    spec = yaml.safe_load((DATA / "tiny.yaml").read_text())
    spec["name"] = "tiny_labels"
    labels = ["L1, robust", 'it\'s "L2" = σ² ✓']
    spec["compare"] = {"loss": {labels[0]: {"loss": "l1"}, labels[1]: {"loss": "l2"}}}
    spec["description"] = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"
    spec["expect"] = [{"claim": "<script>document.title='PWNED2'</script>", "source": "<b onmouseover=x>src</b>",
                       "a": labels[0], "b": labels[1]}]
    spec["budgets"]["smoke"].update(trials_per_cell=1, seeds=2, steps=4, eval_every=2)
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    code, out, err = cli("run", str(tmp_path / "labels.yaml"), "--budget", "smoke", "--storage", str(tmp_path / "s"),
                         "--address", ray_cluster.address, "--quiet")
    assert code == 0, out + err
    dom, errors = browser.load(tmp_path / "s" / "tiny_labels" / "report.html")
    assert errors == []
    assert "<title>tiny_labels report</title>" in dom and "PWNED</title>" not in dom
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom
    assert "&lt;script&gt;document.title='PWNED2'&lt;/script&gt;" in dom and "&lt;b onmouseover=x&gt;" in dom
    from html import escape

    for label in labels:
        assert escape(f"loss={label}", quote=False) in dom  # in the answer, the tables and the image panel
    grid = dom[dom.index('id="image-table"'):]
    assert all(escape(f"loss={lab}", quote=False) in grid[:grid.index("</table>")] for lab in labels)
    code, out, err = cli("status", "tiny_labels", "--storage", str(tmp_path / "s"))
    assert code == 0 and "loss=L1, robust: 3/3" in out, out



@pytest.mark.parametrize("x0_means,shown", [([3.1, 3.4], True), ([1.1, 1.3], False)])
def test_the_x0_note_appears_exactly_when_x0_cells_are_far_above_the_others(x0_means, shown):
    """The note explains why x0-prediction's bound is far above eps and v, with this study's numbers; it is never
    written where the table says otherwise."""
    import pandas as pd

    from denoise_core.tasks import ReportView, get_task, validate_config

    s = pd.DataFrame({"cell": [f"c{i}" for i in range(4)], "schedule": ["linear", "cosine"] * 2,
                      "prediction": ["eps", "eps", "x0", "x0"], "mean": [1.2, 1.25, *x0_means],
                      "psnr_sigma25": [30.0, 30.2, 27.0, 27.4]})
    configs = {f"c{i}": validate_config({"task": "ddpm", "schedule": sch, "prediction": pred})
               for i, (sch, pred) in enumerate(zip(s.schedule, s.prediction))}
    notes = get_task("ddpm").notes(ReportView("bits_per_dim", s, configs))  # the task's own hook: the report names none
    if not shown:
        assert notes == []
        return
    (note,) = notes
    assert "bits_per_dim (3.1 to 3.4) is far above the other cells' (1.2 to 1.25)" in note
    assert "psnr_sigma25 27.2 dB against 30.1 dB" in note
