from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from denoise_core.data import (BUNDLED, NATURAL_TEST, NATURAL_TRAIN, NATURAL_VAL, SPLITS, fixed_crops,
                               fixed_crops_and_rows, load_dataset, load_split, random_crops)


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("channels", [1, 3])
def test_bundled_sets_load_offline(name, channels):
    for split in SPLITS:
        x = load_dataset(name, split=split, channels=channels)
        assert x.dtype == torch.float32 and x.ndim == 4 and x.shape[1] == channels and len(x) > 0
        assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.05


@pytest.mark.parametrize("name", BUNDLED)
def test_three_splits_are_disjoint(name):
    """No validation or test image appears among the training images, nor a test image among the
    validation ones (bundled sets split by source image; exact duplicates would give distance 0)."""
    assert not (set(NATURAL_TRAIN) & set(NATURAL_VAL) or set(NATURAL_TRAIN) & set(NATURAL_TEST)
                or set(NATURAL_VAL) & set(NATURAL_TEST))
    train, val, test = (load_dataset(name, split=s) for s in SPLITS)
    for a, b in ((val, train), (test, train), (test, val)):
        assert torch.cdist(a.flatten(1), b.flatten(1)).min() > 0.5


def test_torchvision_sets_never_download_unasked(tmp_path):
    with pytest.raises(ValueError, match="needs a data root"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="not found under"):
        load_dataset("cifar10", root=str(tmp_path))


def _save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def test_folder_reads_every_kind(tmp_path):
    rng = np.random.default_rng(0)
    _save(tmp_path / "a_gray.png", rng.integers(0, 255, (40, 50), dtype=np.uint8))
    _save(tmp_path / "b_rgb.jpg", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    _save(tmp_path / "c_rgba.png", rng.integers(0, 255, (36, 36, 4), dtype=np.uint8))
    sixteen = (rng.integers(0, 65535, (40, 40))).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "d_16bit.tif")
    _save(tmp_path / "e_rgb.tiff", rng.integers(0, 255, (33, 40, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    for channels in (1, 3):
        train, val, test = (load_dataset(f"folder:{tmp_path}", split=s, channels=channels, tile=32) for s in SPLITS)
        assert train.shape[1:] == val.shape[1:] == test.shape[1:] == (channels, 32, 32)
        assert len(val) == 1 and len(test) == 1 and len(train) >= 3  # e_rgb is val, d_16bit test, by file
        assert torch.cdist(test.flatten(1), torch.cat([train, val]).flatten(1)).min() > 0
        assert 0 <= train.min() and train.max() <= 1
    # 16-bit values keep their scale: the tile's mean is near 0.5, not near 0 or clipped to 1
    assert 0.3 < load_dataset(f"folder:{tmp_path}", split="test", tile=32)[-1].mean() < 0.7


def test_folder_errors_name_path_and_file(tmp_path):
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image.*broken.png"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"folder:{tmp_path}/missing")


def test_crops_random_on_device_and_fixed_deterministic():
    data = torch.arange(2 * 1 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    c = random_crops(data, 100, 8, g)
    assert c.shape == (100, 1, 8, 8)
    # every crop is a contiguous window (possibly flipped): horizontal neighbours differ by +-1
    diffs = (c[..., 1:] - c[..., :-1]).abs()
    assert torch.all(diffs == 1)
    # the fixed crops: the 8 windows of the two images' 2 x 2 grids (image, row, column order), 5 of them evenly
    # spaced (windows 0, 1, 3, 5, 7), the same windows whenever asked
    fixed = fixed_crops(data, 8, 5)
    windows = [(0, 0, 0), (0, 0, 8), (0, 8, 8), (1, 0, 8), (1, 8, 8)]
    assert torch.equal(fixed, torch.stack([data[n, :, r:r + 8, c:c + 8] for n, r, c in windows]))


def test_each_test_crop_knows_the_photograph_it_was_cut_from():
    test, sources = load_split("natural", split="test")
    assert torch.equal(test, load_dataset("natural", split="test"))
    assert len(sources) == len(test) and set(sources) == set(NATURAL_TEST)  # every held-out photo gives tiles
    crops, rows = fixed_crops_and_rows(test, 64, 32, sources)
    assert torch.equal(crops, fixed_crops(test, 64, 32, sources))
    for crop, r in zip(crops, rows):  # each crop lies inside the tile it is said to come from
        windows = test[r].unfold(1, 64, 64).unfold(2, 64, 64).reshape(1, -1, 64, 64).transpose(0, 1)
        assert any(torch.equal(crop, w) for w in windows)
    # 4 crops of each of the 8 photographs, whatever their sizes: a mean over crops weighs photographs alike
    assert Counter(sources[r] for r in rows) == {name: 4 for name in NATURAL_TEST}
    assert Counter(sources[r] for r in fixed_crops_and_rows(test, 64, 30, sources)[1]) == \
        {name: 4 if i < 6 else 3 for i, name in enumerate(NATURAL_TEST)}
    unbalanced = Counter(sources[r] for r in fixed_crops_and_rows(test, 64, 32)[1])
    assert len(unbalanced) < 8 or unbalanced != {name: 4 for name in NATURAL_TEST}
    assert load_split("digits", split="test")[1] is None  # each digit is its own image


def test_folder_sources_are_file_names(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        _save(tmp_path / f"im{i}.png", rng.integers(0, 255, (64, 96), dtype=np.uint8))
    assert load_split(f"folder:{tmp_path}", split="test", tile=32)[1] == ["im3.png"] * 6  # 2 x 3 tiles of the 4th file
