"""Zero-shot (single-image) schemes: ZS-N2N's downsampled pairs and its consistency term, Noise2Fast's checkerboard
halves and stopping rule, a fit that denoises, the refusals, `evaluate --method` and `denoise --method`, and the
catalog's zero_shot study through Ray with its report read in Chromium."""
import math

import numpy as np
import pytest
import torch

from denoise_core.schemes import build_scheme
from denoise_core.schemes.noise2fast import checkerboard_halves
from denoise_core.schemes.zs_n2n import pair_downsample, zs_n2n_losses


def _positions(h: int, w: int) -> torch.Tensor:
    return torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)


def _picture(side: int = 48, seed: int = 0) -> torch.Tensor:
    """A smooth picture with edges [1, 1, side, side] in [0.1, 0.9]: something for a denoiser to keep."""
    g = torch.Generator().manual_seed(seed)
    i, j = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij")
    x = 0.5 + 0.25 * torch.sin(i / 5) * torch.cos(j / 7) + 0.15 * ((i > side / 2) ^ (j > side / 3)).float()
    return (x + 0.02 * torch.rand(side, side, generator=g)).clamp(0.1, 0.9)[None, None]


def _psnr(a, b) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_zs_n2n_views_average_the_two_diagonals_of_every_2x2_cell_and_their_noise_is_independent():
    h = w = 6
    d1, d2 = pair_downsample(_positions(h, w))
    for i in range(h // 2):
        for j in range(w // 2):
            tl, tr, bl, br = (2 * i) * w + 2 * j, (2 * i) * w + 2 * j + 1, (2 * i + 1) * w + 2 * j, (2 * i + 1) * w + 2 * j + 1
            assert d1[0, 0, i, j] == (tr + bl) / 2 and d2[0, 0, i, j] == (tl + br) / 2
    # each pixel is in exactly one view, with weight 1/2: pure noise of std s gives views of std s/sqrt(2), uncorrelated
    n = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v1, v2 = pair_downsample(n)
    assert v1.std().item() == pytest.approx(1 / math.sqrt(2), rel=0.01)
    assert abs(torch.corrcoef(torch.stack([v1.flatten(), v2.flatten()]))[0, 1].item()) < 0.01
    assert v1.shape == (1, 3, 256, 256)  # per channel, odd sides dropped below
    assert pair_downsample(torch.zeros(1, 1, 7, 9))[0].shape == (1, 1, 3, 4)


def test_zs_n2n_consistency_is_zero_for_a_pixelwise_network_and_counts_what_a_spatial_one_changes():
    """Downsampling is a per-channel average: it commutes with any pixelwise map, so the consistency term is exactly
    0 for one, while the residual term is the two views' own distance; a spatial filter does not commute with it."""
    y = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d1, d2 = pair_downsample(y)
    zero = lambda z: torch.zeros_like(z)  # noqa: E731 - D is the identity
    residual, consistency = zs_n2n_losses(zero, y)
    assert consistency.item() == 0.0 and residual.item() == pytest.approx(((d1 - d2) ** 2).mean().item(), rel=1e-12)
    residual, consistency = zs_n2n_losses(lambda z: 0.3 * z - 0.1, y)  # D(z) = 0.7 z + 0.1: pixelwise
    assert consistency.item() == pytest.approx(0.0, abs=1e-15)
    blur = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False).double()
    torch.nn.init.constant_(blur.weight, 1 / 9)
    residual, consistency = zs_n2n_losses(blur, y)
    # by hand: each view's estimate against the views of the whole image's estimate
    e1, e2 = d1 - blur(d1), d2 - blur(d2)
    c1, c2 = pair_downsample(y - blur(y))
    assert consistency.item() == pytest.approx(0.5 * (((e1 - c1) ** 2).mean() + ((e2 - c2) ** 2).mean()).item(), rel=1e-12)
    assert consistency.item() > 1e-4
    consistency.backward()  # it trains the network through the whole image's estimate too
    assert blur.weight.grad.abs().sum() > 0


def test_noise2fast_halves_pair_vertical_and_horizontal_neighbours_and_cover_every_pixel_once():
    h, w = 6, 8
    y = _positions(h, w)
    h1, h2, v1, v2 = checkerboard_halves(y)
    assert h1.shape == (1, 1, 3, 8) and v1.shape == (1, 1, 6, 4)
    assert sorted(torch.cat([h1.flatten(), h2.flatten()]).tolist()) == list(range(h * w))
    assert sorted(torch.cat([v1.flatten(), v2.flatten()]).tolist()) == list(range(h * w))
    rc = lambda t: (t.long() // w, t.long() % w)  # noqa: E731 - (row, column) of each value
    (r1, c1), (r2, c2) = rc(h1), rc(h2)
    assert torch.equal(c1, c2) and ((r1 - r2).abs() == 1).all()  # the two rows of one column pair
    (r1, c1), (r2, c2) = rc(v1), rc(v2)
    assert torch.equal(r1, r2) and ((c1 - c2).abs() == 1).all()


def test_each_fit_denoises_from_the_seeds_weights_and_noise2fast_stops_by_its_rule():
    from denoise_core.noise import build_noise
    from denoise_core.schemes import noise2fast

    x = _picture(40)
    y = build_noise("gaussian", sigma=25)(x, generator=torch.Generator().manual_seed(0)).noisy
    noisy = _psnr(y.clamp(0, 1), x)
    zs = build_scheme("zs_n2n")
    a, b, c = zs.fit(y, 0, 200), zs.fit(y, 0, 200), zs.fit(y, 1, 200)
    assert torch.equal(a, b) and not torch.equal(a, c)  # the seed draws the initial weights, nothing else varies
    assert _psnr(a, x) > noisy + 5, (_psnr(a, x), noisy)
    n2f = build_scheme("noise2fast", patience=20, average=10)
    steps = []
    mse = noise2fast.F.mse_loss

    def counted(out, target):
        steps.append(1)
        return mse(out, target)

    noise2fast.F.mse_loss = counted
    try:
        out = n2f.fit(y, 0, 2000)
    finally:
        noise2fast.F.mse_loss = mse
    assert 20 < len(steps) < 2000  # its rule stopped it, not the cap
    assert _psnr(out, x) > noisy + 4, (_psnr(out, x), noisy)


def test_a_zero_shot_cell_trains_nothing_and_reports_each_images_fit_time():
    from denoise_core.tasks import run_trial, validate_config

    cfg = validate_config({"target": "zs_n2n", "steps": 500, "eval_every": 100, "noise": "gaussian",
                           "noise_params": {"sigma": 25}})
    assert (cfg.steps, cfg.eval_every) == (1, 1)
    reports = []
    out = run_trial({"target": "zs_n2n", "fit_steps": 30, "noise": "gaussian", "noise_params": {"sigma": 25},
                     "crop": 32, "val_images": 3, "test_images": 2, "test": True, "select": "psnr"}, reports.append)
    (m,) = reports
    assert m["params"] == 21_313 and m["train_loss"] == 0.0  # ZS-N2N's own network (gray), not the U-Net
    assert m["seconds_per_image"] > 0 and m["test_seconds_per_image"] > 0
    assert len(out["per_image"]["test_seconds_per_image"]) == 2


@pytest.mark.parametrize("config,needle", [
    ({"target": "zs_n2n", "noise": "impulse", "noise_params": {"p": 0.1}},
     "ZS-N2N (zs_n2n) fits its network on two noisy views of the one image"),
    ({"target": "noise2fast", "noise": "text", "noise_params": {"coverage": 0.1}}, "it needs zero-mean noise"),
    ({"target": "zs_n2n", "target_params": {"steps": 0}}, "steps=0 is the Adam steps per image"),
    ({"target": "noise2fast", "target_params": {"patience": 0}}, "patience=0 must be a whole number >= 1"),
])
def test_what_a_zero_shot_scheme_cannot_do_is_refused_in_one_line(config, needle):
    from denoise_core.tasks import validate_config

    with pytest.raises(ValueError) as e:
        validate_config(config)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_evaluate_method_fits_each_image_and_denoise_method_writes_a_users_image(tmp_path):
    import csv

    from PIL import Image

    from tests.conftest import cli
    from tests.fixtures import image_folder

    folder = image_folder(tmp_path / "t", 2, sizes=((96, 80),))  # (on smaller pictures ZS-N2N gains little)
    code, out, err = cli("evaluate", "--test", f"folder:{folder}", "--noise", "gaussian:sigma=25", "--method", "zs_n2n",
                         "--fit-steps", "300", "--csv", str(tmp_path / "out.csv"))
    assert code == 0, err
    assert "zs_n2n: 2/2 images" in err  # progress per image
    rows = {r["method"]: r for r in csv.DictReader(open(tmp_path / "out.csv"))}
    assert list(rows) == ["noisy input", "BM3D", "ZS-N2N"]
    assert float(rows["ZS-N2N"]["psnr"]) > float(rows["noisy input"]["psnr"]) + 3
    assert float(rows["ZS-N2N"]["seconds_per_image"]) > float(rows["BM3D"]["seconds_per_image"]) > 0
    assert rows["ZS-N2N"]["note"] == "fitted 300 steps at most, not as published"
    # the same noisy input (seed 0) and the same initial weights: the fit is the one `denoise --method` makes
    code, out, err = cli("evaluate", "--test", f"folder:{folder}", "--noise", "impulse:p=0.1", "--method", "zs_n2n")
    assert code == 2 and "needs zero-mean noise" in err and err.count("\n") == 1, err
    code, out, err = cli("evaluate", "--test", f"folder:{folder}", "--noise", "gaussian:sigma=25", "--method", "dip")
    assert code == 2 and "method 'dip' is not a single-image method; known: noise2fast, zs_n2n" in err, err

    rgb = (np.asarray(_picture(40)[0, 0]) * 255).astype(np.uint8)
    noisy = np.clip(rgb[..., None].repeat(3, -1) + np.random.default_rng(0).normal(0, 25, (40, 40, 3)), 0, 255)
    Image.fromarray(noisy.round().astype(np.uint8)).save(tmp_path / "in.png")
    code, out, err = cli("denoise", "--method", "noise2fast", "--fit-steps", "400", str(tmp_path / "in.png"), "-o",
                         str(tmp_path / "out.png"))
    assert code == 0, err
    assert "fitted on the image in" in out
    written = Image.open(tmp_path / "out.png")
    assert written.mode == "RGB" and written.size == (40, 40)
    clean = rgb[..., None].repeat(3, -1).astype(float)
    mse = lambda a: np.mean((np.asarray(a, dtype=float) - clean) ** 2)  # noqa: E731
    assert mse(written) < mse(noisy) / 2
    for args, needle in [
        (("--method", "zs_n2n", "--study", "x"), "give --study (a study's trained model) or --method"),
        (("--method", "zs_n2n", "--sigma", "25"), "--method fits on the image alone"),
    ]:
        code, out, err = cli("denoise", *args, str(tmp_path / "in.png"), "-o", str(tmp_path / "o2.png"))
        assert code == 2 and needle in err and err.count("\n") == 1, err
    Image.new("L", (4, 4), 128).save(tmp_path / "tiny.png")
    code, out, err = cli("denoise", "--method", "zs_n2n", str(tmp_path / "tiny.png"), "-o", str(tmp_path / "o3.png"))
    assert code == 2 and "needs images of at least 8x8 pixels, got (4, 4)" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o2.png").exists() and not (tmp_path / "o3.png").exists()


@pytest.mark.ray
def test_the_zero_shot_study_runs_through_ray_and_its_page_shows_the_fit_time_per_image(ray_cluster, tmp_path):
    """The catalog's zero_shot study at its smoke budget: Noise2Clean, ZS-N2N and Noise2Fast under three noises,
    through Ray; every zero-shot run took one step and fitted each image; the page shows the seconds per image of
    each cell beside its score, and ZS-N2N's published rows (another protocol) are not taken as a check."""
    from tests import browser
    from tests.conftest import smoke_study

    _, df, dom = smoke_study("zero_shot", ray_cluster.address, tmp_path, trials=9 * 3)
    rows = {(r["noise"], r["method"]): r for r in browser.table_rows(dom, "cell-table")}
    assert set(rows) == {(n, m) for n in ("gaussian25", "gaussian50", "poisson50") for m in ("N2C", "ZS-N2N", "Noise2Fast")}
    seconds = {k: float(r["mean seconds_per_image"]) for k, r in rows.items()}
    for noise in ("gaussian25", "gaussian50", "poisson50"):  # a fit against one forward pass
        assert seconds[(noise, "ZS-N2N")] > 10 * seconds[(noise, "N2C")], seconds
    zs = df[df.cell.str.contains("method=ZS-N2N")]
    assert set(zs["final.step"]) == {1}, zs["final.step"]  # the network is not trained: each image is fitted
    best = {(r["noise"], r["method"]): r for r in browser.table_rows(dom, "best-table")}
    assert best["gaussian25", "ZS-N2N"]["network passes per test image"] == "a fit of its own: 20 Adam steps (published: 3000)"
    assert best["gaussian25", "Noise2Fast"]["network passes per test image"].endswith("at 20 steps (published: no cap)")
    assert best["gaussian25", "N2C"]["network passes per test image"] == "1"
    assert "method=ZS-N2N and method=Noise2Fast train nothing before evaluation" in dom  # dashed levels, not curves
    assert "not the literature's whole-image protocol, so no published row applies" in dom
