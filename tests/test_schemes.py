"""Training schemes (`target:`): each one's defining property, and a short trial of each beating the noisy input."""
from types import SimpleNamespace

import pytest
import torch

from denoise_core.schemes import SCHEMES, build_scheme


def _positions(h: int, w: int, b: int = 2, c: int = 1) -> torch.Tensor:
    """Crops whose every pixel holds its own (row * w + col): a value says where it came from."""
    return torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).expand(b, c, h, w).contiguous()


class _Net(torch.nn.Module):
    """A stand-in network, pixel by pixel: its output's gradient shows which pixels a loss counts."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.9))

    def forward(self, x):
        return self.w * x


def _trial(seed=0):
    from denoise_core.losses import build_loss

    net = _Net()
    outs = []

    def forward(x):
        out = net(x)
        if out.requires_grad:
            out.retain_grad()
        outs.append(out)
        return out

    return SimpleNamespace(gen=torch.Generator().manual_seed(seed), fresh=False, forward=forward,
                           loss=build_loss("l2"), outs=outs)


@pytest.mark.parametrize("replacement", ["neighbour", "median"])
def test_a_blind_spot_hides_each_masked_pixel_and_its_loss_counts_only_those(replacement):
    s = build_scheme("blindspot", fraction=0.05, radius=2, replacement=replacement)
    y = _positions(16, 16)
    masked, mask = s.mask(y, torch.Generator().manual_seed(0))
    hit = mask[:, 0].bool()
    assert int(hit[0].sum()) == round(0.05 * 256)  # the fraction, per crop
    assert torch.equal(masked[~hit.unsqueeze(1).expand_as(y)], y[~hit.unsqueeze(1).expand_as(y)])  # the rest untouched
    for b, i, j in hit.nonzero().tolist():
        v = masked[b, 0, i, j].item()
        if replacement == "neighbour":  # another pixel of the 5x5 window (reflected at the edges), never itself
            si, sj = divmod(int(v), 16)
            assert (si, sj) != (i, j) and abs(si - i) <= 2 and abs(sj - j) <= 2
        else:  # the median of the window without its centre: a value of the window, never needing the centre's
            window = [y[0, 0, min(max(a, 0), 15), min(max(c, 0), 15)].item() for a in range(i - 2, i + 3)
                      for c in range(j - 2, j + 3)]
            assert min(window) <= v <= max(window)
    # the loss: zero gradient on every unmasked pixel's prediction, a gradient on the masked ones
    trial = _trial()
    clean = torch.rand(2, 1, 16, 16)
    captures = (clean + 0.1 * torch.randn(2, 1, 16, 16)).unsqueeze(1)
    loss, _ = s.train(trial, clean, captures, None, progress=0.5)
    loss.backward()
    grad = trial.outs[0].grad
    seen = grad != 0
    assert seen.flatten(1).sum(1).tolist() == [round(0.05 * 256)] * 2  # the masked pixels, no other
    # the same draw of the mask as in train: what the loss saw is exactly the masked set
    _, again = s.mask(captures[:, 0], torch.Generator().manual_seed(0))
    assert torch.equal(seen, again.bool())


def test_neighbor2neighbor_pairs_are_adjacent_pixels_of_one_cell_never_the_same():
    s = build_scheme("neighbor")
    h = w = 16
    y = _positions(h, w, b=4)
    p = s.pairs(4, h, w, torch.Generator().manual_seed(1), "cpu")
    a, b = s.sub(y, p[..., 0]), s.sub(y, p[..., 1])
    ai, aj = (a // w).long(), (a % w).long()
    bi, bj = (b // w).long(), (b % w).long()
    assert ((ai - bi).abs() + (aj - bj).abs() == 1).all()  # always adjacent: one step, horizontal or vertical
    cell_i, cell_j = torch.arange(h // 2).view(1, 1, -1, 1), torch.arange(w // 2).view(1, 1, 1, -1)
    assert ((ai // 2 == cell_i) & (aj // 2 == cell_j) & (bi // 2 == cell_i) & (bj // 2 == cell_j)).all()
    assert len({tuple(x) for x in p.view(-1, 2).tolist()}) == 8  # every pair of the reference code occurs
    # the regulariser's weight ramps from 0 to gamma over training (the reference code's linear ramp)
    clean = torch.rand(2, 1, h, w)
    captures = (clean + 0.1 * torch.randn(2, 1, h, w)).unsqueeze(1)
    at0, _ = s.train(_trial(), clean, captures, None, progress=0.0)
    at1, _ = s.train(_trial(), clean, captures, None, progress=1.0)
    flat, _ = build_scheme("neighbor", gamma=0.0).train(_trial(), clean, captures, None, progress=1.0)
    assert at0.item() == pytest.approx(flat.item()) and at1.item() > flat.item()


def test_r2r_input_and_target_noises_are_uncorrelated_and_average_to_the_capture():
    s = build_scheme("r2r", alpha=0.5)
    g = torch.Generator().manual_seed(0)
    sigma, x = 25 / 255, torch.rand(1, 1, 256, 256)
    y = x + sigma * torch.randn(x.shape, generator=g)
    inp, target = s.recorrupt(y, sigma, g)
    a, b = (inp - x).flatten(), (target - x).flatten()
    corr = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
    assert abs(corr.item()) < 0.01  # E[(n + a s z)(n - s z / a)] = s^2 - s^2 = 0
    assert a.std().item() == pytest.approx(sigma * (1 + 0.5 ** 2) ** 0.5, rel=0.02)  # the input's noise: s sqrt(1 + a^2)
    assert b.std().item() == pytest.approx(sigma * (1 + 1 / 0.5 ** 2) ** 0.5, rel=0.02)
    # at evaluation: the capture itself, or the mean over recorruptions (one pass each, counted)
    cfg = SimpleNamespace(val_seed=3, noise="gaussian", noise_params={"sigma": 25})
    assert torch.equal(s.infer(lambda t: t, y, cfg), y) and s.passes() == 1
    avg = build_scheme("r2r", alpha=0.5, eval_samples=8)
    out = avg.infer(lambda t: t, y, cfg)
    assert avg.passes() == 8 and (out - y).std().item() == pytest.approx(0.5 * sigma / 8 ** 0.5, rel=0.05)
    assert torch.equal(out, avg.infer(lambda t: t, y, cfg))  # the same recorruptions at every evaluation


def test_sure_estimates_the_squared_error_to_the_clean_image_without_it():
    """For a fixed denoiser (a 3x3 blur blended with its input), SURE's mean over noise draws matches the mean
    squared error to the clean image, which SURE never sees; the plain squared error to the capture does not."""
    s = build_scheme("sure")
    g = torch.Generator().manual_seed(0)
    sigma = 25 / 255
    x = 0.2 + 0.6 * torch.outer(torch.linspace(0, 1, 64), torch.linspace(1, 0, 64)).view(1, 1, 64, 64)  # smooth
    kernel = torch.full((1, 1, 3, 3), 1 / 9)

    def f(y):
        return 0.3 * y + 0.7 * torch.nn.functional.conv2d(y, kernel, padding=1)

    sures, mses, naive = [], [], []
    for _ in range(200):
        y = x + sigma * torch.randn(x.shape, generator=g)
        value, out = s.value(f, y, sigma, g)
        sures.append(value.item())
        mses.append((out - x).square().mean().item())
        naive.append((out - y).square().mean().item())
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert mean(sures) == pytest.approx(mean(mses), rel=0.03)
    assert abs(mean(naive) - mean(mses)) > 0.3 * mean(mses)  # not true of the naive estimate


def test_every_scheme_says_what_it_needs_and_a_config_it_cannot_train_is_refused():
    from denoise_core.tasks import validate_config

    for name in SCHEMES.names:
        scheme = SCHEMES.get(name)
        assert scheme.needs and scheme.captures >= 1 and scheme.__doc__
    assert [n for n in SCHEMES.names if SCHEMES.get(n).clean] == ["clean"]
    refusals = [({"target": "n2v"}, "unknown training scheme 'n2v'"),
                ({"target": "blindspot", "target_params": {"fraction": 1.0}}, "fraction=1.0"),
                ({"target": "blindspot", "target_params": {"radius": 0}}, "radius=0"),
                ({"target": "blindspot", "target_params": {"replacement": "mean"}}, "replacement='mean'"),
                ({"target": "neighbor", "crop": 80}, "crop=80 asks for 160x160, larger than the 128x128 training tiles"),
                ({"target": "neighbor", "target_params": {"ramp": "cosine"}}, "ramp='cosine'"),
                ({"target": "noisy", "train_captures": 1}, "trains on 2 captures"),
                ({"target": "r2r", "noise": "poisson", "noise_params": {"lam": 30}}, "needs one known Gaussian sigma"),
                ({"target": "sure", "loss": "l1"}, "trains with loss l2"),
                ({"target": "r2r", "target_params": {"eval_samples": -1}}, "eval_samples=-1")]
    for cfg, needle in refusals:
        with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            validate_config({"task": "denoise", **cfg})


@pytest.mark.parametrize("target,params", [("blindspot", {"fraction": 0.05}),
                                           ("blindspot", {"fraction": 0.05, "replacement": "median"}),
                                           ("neighbor", {}), ("r2r", {}), ("r2r", {"eval_samples": 2}), ("sure", {})])
def test_a_single_capture_scheme_beats_the_noisy_input_on_held_out_images(tmp_path, target, params):
    from denoise_core.tasks import run_trial

    from tests.test_train import TINY

    out = run_trial({**TINY, "target": target, "target_params": params, "train_captures": 1}, lambda m: None,
                    workdir=tmp_path)
    assert out["metrics"]["psnr"] > out["metrics"]["input_psnr"] + 2.0, out["metrics"]


def test_a_stored_r2r_model_is_scored_by_evaluate_as_its_trial_scored_it(tmp_path):
    """R2R with eval_samples averages its outputs over recorruptions; `evaluate --study` (and `apply`) apply a stored
    model through the same scheme, so the trial's whole-image test score is reproduced, not a single pass's."""
    from denoise_core.tasks import load_model, run_trial
    from studies.evaluate import StudyModel, evaluate

    from tests.fixtures import image_folder
    from tests.test_train import TINY

    folder = f"folder:{image_folder(tmp_path / 't', 3)}"
    out = run_trial({**TINY, "steps": 30, "target": "r2r", "target_params": {"eval_samples": 4}, "train_captures": 1,
                     "dataset": {"train": "natural", "val": "natural", "test": folder}, "test": True,
                     "test_protocol": "whole"}, lambda m: None, workdir=tmp_path / "w")
    model, cfg = load_model(out["checkpoint"])
    (row,) = [r for r in evaluate(folder, None, "gaussian:sigma=25", 1, cfg.val_seed, {"r2r": StudyModel(model, cfg, [])})
              if r.method == "r2r"]
    assert row.psnr == pytest.approx(out["metrics"]["test_psnr"], abs=0.006)  # evaluate rounds to 2 decimals
    # the stored model applied as the scheme says: the mean over 4 recorruptions, not one pass over the input
    from denoise_core.tasks.denoise import apply_denoiser

    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        averaged = apply_denoiser(model, cfg, x)
        single = apply_denoiser(model, cfg.model_copy(update={"target_params": {"eval_samples": 0}}), x)
        assert torch.equal(single, model(x).clamp(0, 1)) and (averaged - single).abs().mean() > 1e-3


def _claims_on_their_slice_and_excluded_cells_marked(dom: str, sdir, tmp_path) -> None:
    """The N2V claims cite BSD68 at sigma 25: judged on the Gaussian slice, not pooled with Poisson. The cells left
    out are marked, with their reason, in the image grid and the heatmap (never blank), and `denoise --cell` on one
    says it is excluded."""
    from html import escape

    from PIL import Image

    from tests import browser
    from tests.conftest import cli

    verdicts = {r["claim"]: r for r in browser.table_rows(dom, "verdict-table")}
    assert verdicts["Blind-spot training (Noise2Void) scores below Noise2Clean"]["compared"] == "N2C vs N2V (noise=gaussian)"
    # 2 seeds a side: a verdict on too few degrees of freedom says so, with no interval, never an answer
    few = [r for r in verdicts.values() if r["verdict"] == "too few runs or images"]
    assert all("(no interval: 2 vs 2 runs, " in r["effect here (the first's advantage)"] for r in few), few
    undecided = [r for r in verdicts.values() if r["verdict"] == "inconclusive"]
    assert all("could detect " in r["effect here (the first's advantage)"] for r in undecided), undecided
    assert few or undecided
    assert 'id="precision"' in dom and "seeds a side" in dom
    why = "excluded (target 'r2r' needs one known Gaussian sigma)"
    assert why in dom and "excluded (target 'sure' needs one known Gaussian sigma)" in dom
    html = (sdir / "report.html").read_text()
    assert why in html and escape(why) in html  # the heatmap's tile (figure data) and the image grid's (HTML)
    poisson = next(r for k, r in cell_rows_of(dom, "image-table").items() if "poisson" in k)
    assert poisson["scheme=R2R"] == f"scheme=R2R{why}", poisson
    Image.new("L", (32, 32), 128).save(tmp_path / "x.png")
    code, out, err = cli("denoise", "--study", "self_supervised", "--storage", str(sdir.parent), "--cell",
                         "noise=poisson,scheme=R2R", str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png"))
    assert code == 2 and "is excluded from study 'self_supervised' (target 'r2r' needs one known Gaussian sigma)" \
        in err, err


def cell_rows_of(dom: str, table_id: str) -> dict:
    """{first cell of a row: {header: text}} of a report table whose rows are headed by their first cell."""
    from tests import browser

    return {next(iter(r.values())): r for r in browser.table_rows(dom, table_id)}


def test_the_self_supervised_study_runs_through_ray_and_its_report_says_what_each_scheme_needed(ray_cluster, tmp_path):
    """The catalog's self_supervised study at its smoke budget: Noise2Clean, Noise2Noise, Noise2Void,
    Neighbor2Neighbor, R2R and SURE on fixed captures (one each, two for Noise2Noise) under Gaussian and Poisson
    noise, R2R and SURE left out where the noise has no sigma; tuned and confirmed through Ray, and a report that
    shows beside each cell's score what its scheme needed of the data and how many captures it trained on."""
    from tests import browser
    from tests.conftest import smoke_study

    sdir, df, dom = smoke_study("self_supervised", ray_cluster.address, tmp_path, trials=10 * 3)
    assert not {"noise=poisson,scheme=R2R", "noise=poisson,scheme=SURE"} & set(df.cell)  # excluded: never run
    rows = {(r["noise"], r["scheme"]): r for r in browser.table_rows(dom, "best-table")}
    assert set(rows) == {(n, s) for n in ("gaussian", "poisson") for s in ("N2C", "N2N", "N2V", "Ne2Ne")} | \
        {("gaussian", "R2R"), ("gaussian", "SURE")}
    assert rows["gaussian", "N2C"]["it needs"] == "clean images and a noisy capture of each"
    assert rows["poisson", "N2N"]["it needs"] == "two captures of each image"
    assert all(rows["gaussian", k]["it needs"].startswith("one capture of each image") for k in ("N2V", "Ne2Ne", "R2R", "SURE"))
    r2r = rows["gaussian", "R2R"]
    assert [r2r[k] for k in ("training scheme", "it needs", "training captures", "network passes per test image")] == \
        ["r2r", "one capture of each image and the noise's sigma", "1", "1"]
    assert all(float(r["mean test psnr (dB)"]) > 0 for r in rows.values())  # what it needed, beside what it scored
    for claim in ("Noise2Noise (two captures of each image) matches Noise2Clean",
                  "Recorrupted-to-Recorrupted matches Noise2Clean on Gaussian noise"):
        assert claim in dom  # every verdict is on the page, held or not
    _claims_on_their_slice_and_excluded_cells_marked(dom, sdir, tmp_path)
    # a claim over both noises pairs each test image within each noise: counted as such, never as more test images
    import re

    n = int(re.search(r"The (\d+) test images are crops of", dom).group(1))
    comparisons = browser.table_rows(dom, "comparison-table")
    per_slice = {r["test images"] for r in comparisons if r["slice"] != "all"}
    pooled = {r["test images"] for r in comparisons if r["slice"] == "all"}
    assert len(per_slice) == 1 and per_slice.pop().startswith(f"{n} ")
    assert pooled and all(p.startswith(f"{2 * n} ({n} in each of 2 slices") for p in pooled), pooled
