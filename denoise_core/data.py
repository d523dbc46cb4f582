"""Datasets as tensors, and crops drawn on the device.

    train = load_dataset("natural", split="train", channels=1)   # [N, C, T, T] float32 in [0, 1]

Bundled (no network): `natural` (scikit-image's photographs, split by source image),
`faces` (scikit-image's LFW subset, 25x25), `digits` (scikit-learn's 8x8 digits, resized).
From a data root via torchvision: `mnist`, `fashion_mnist`, `cifar10` (downloaded only with
`download=True`). Any folder: `folder:PATH` (PNG/JPEG/TIFF, gray/RGB/RGBA/16-bit).

Images of different sizes are cut into non-overlapping `tile` x `tile` tiles so that one
tensor holds a whole split; training crops are drawn from the tiles on the device.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# three disjoint splits by source image: tuning and early stopping see `val`, findings use `test`
NATURAL_TRAIN = ["chelsea", "coffee", "coins", "moon", "hubble_deep_field",
                 "immunohistochemistry", "brick", "grass", "gravel", "clock"]
NATURAL_VAL = ["camera", "astronaut"]  # never trained on
# never trained on, never used to choose anything: eight photographs (street, scientific, document,
# medical, graphic), each scaled to a short side of HELD_OUT_SIDE so each gives a similar share of the
# test crops (`test_images` of them, 32 by default: the findings compare cells image by image)
NATURAL_TEST = ["motorcycle", "rocket", "retina", "page", "text", "cell", "logo", "microaneurysms"]
NATURAL_SHOWCASE = {"val": "camera", "test": "motorcycle"}  # the whole image the report shows per split
HELD_OUT_SIDE = 256
SPLITS = ("train", "val", "test")
BUNDLED = ["natural", "faces", "digits"]
TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
DATASETS = BUNDLED + list(TORCHVISION) + ["folder:PATH"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def check_dataset_name(name: str) -> None:
    if name in BUNDLED or name in TORCHVISION or (name.startswith("folder:") and len(name) > 7):
        return
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def load_dataset(name: str, root: str | None = None, split: str = "train", channels: int = 1,
                 tile: int = 128, download: bool = False, limit: int | None = None) -> torch.Tensor:
    """One split (train, val or test; disjoint) of a dataset as a float32 tensor [N, channels, H, W] in
    [0, 1] on the CPU. Bundled sets split by source image, folders by file, torchvision sets use their
    official test split and hold out the last tenth of their training split for validation."""
    return load_split(name, root, split, channels, tile, download, limit)[0]


def load_split(name: str, root: str | None = None, split: str = "train", channels: int = 1, tile: int = 128,
               download: bool = False, limit: int | None = None) -> tuple[torch.Tensor, list[str] | None]:
    """`load_dataset(...)` and the source image of each of its rows (a photograph's or a file's name: its
    tiles are not independent images), or None for the sources where every row is its own image."""
    check_dataset_name(name)
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; allowed: {', '.join(SPLITS)}")
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}; allowed: 1, 3")
    sources = None
    if name == "natural":
        names = {"train": NATURAL_TRAIN, "val": NATURAL_VAL, "test": NATURAL_TEST}[split]
        images = [_skimage(n) for n in names]
        if split == "test":
            images = [_short_side(im, HELD_OUT_SIDE) for im in images]
        x, sources = _tiled(images, names, channels, tile)
    elif name == "faces":
        x = _faces(split)
    elif name == "digits":
        x = _digits(split)
    elif name in TORCHVISION:
        x = _torchvision(name, root, split, download)
    else:
        files = _folder_files(Path(name[len("folder:"):]).expanduser(), split)
        x, sources = _tiled([read_image(f) for f in files], [f.name for f in files], channels, tile)
    x = to_channels(x, channels)
    if limit is not None:
        x, sources = x[:limit], sources and sources[:limit]
    return x.contiguous(), sources


def check_source(name: str, root: str | None = None, channels: int = 1, download: bool = False) -> None:
    """Load every split of a data source as a trial would, so that a missing folder, an empty one, a
    truncated or unreadable image, or a torchvision set absent from its root fails before any trial
    runs: a ValueError whose one line names the source, the split and the problem."""
    for split in SPLITS:
        try:
            x, _ = load_split(name, root, split, channels, download=download)
        except (OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"dataset {name!r}, split {split}: {str(e).splitlines()[0]}") from None
        if len(x) == 0:
            raise ValueError(f"dataset {name!r}, split {split}: holds no images")


def _tiled(images: list[torch.Tensor], names: list[str], channels: int, tile: int):
    """Source images -> (one tensor of all their tiles, the source name of each tile)."""
    tiles = [_tiles(to_channels(im, channels), tile) for im in images]
    return torch.cat(tiles), [n for n, t in zip(names, tiles) for _ in range(len(t))]


def showcase_image(name: str, root: str | None = None, channels: int = 1, download: bool = False,
                   split: str = "test", multiple: int = 32, max_side: int = 160) -> torch.Tensor:
    """One whole image [1, C, H, W] of a split for the report (not a crop): the split's first source image,
    centre-cropped to a multiple of `multiple` (any model takes it) and at most `max_side`."""
    check_dataset_name(name)
    if name == "natural":
        img = to_channels(_skimage(NATURAL_SHOWCASE[split]), channels)[None]
    elif name.startswith("folder:"):
        img = to_channels(read_image(_folder_files(Path(name[len("folder:"):]).expanduser(), split)[0]), channels)[None]
    else:
        img = load_dataset(name, root, split, channels, download=download, limit=1)
    h, w = img.shape[-2:]
    th = min(max_side, max(multiple, h // multiple * multiple))
    tw = min(max_side, max(multiple, w // multiple * multiple))
    if h < th or w < tw:  # smaller than one multiple: upscale
        img = F.interpolate(img, size=(max(h, th), max(w, tw)), mode="bilinear", align_corners=False)
        h, w = img.shape[-2:]
    top, left = (h - th) // 2, (w - tw) // 2
    return img[..., top:top + th, left:left + tw].clamp(0, 1).contiguous()


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """[.., C, H, W] with C in {1, 3, 4} -> `channels` (RGBA drops alpha, RGB->gray by luma)."""
    if x.shape[-3] == 4:
        x = x[..., :3, :, :]
    if x.shape[-3] == channels:
        return x
    if channels == 1:  # ITU-R 709 luma weights, as skimage.color.rgb2gray uses
        w = torch.tensor([0.2125, 0.7154, 0.0721]).view(3, 1, 1)
        return (x * w).sum(-3, keepdim=True)
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).clone()


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """An image array (H, W) or (H, W, C), any integer or float type -> [C, H, W] float32 in [0, 1]."""
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max if a.max() > 255 else 255)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t.clamp(0, 1)


def _skimage(name: str) -> torch.Tensor:
    import skimage.data

    if name == "motorcycle":  # the left view of the stereo pair
        return _from_numpy(skimage.data.stereo_motorcycle()[0])
    return _from_numpy(getattr(skimage.data, name)())


def _short_side(img: torch.Tensor, side: int) -> torch.Tensor:
    """[C, H, W] resized (antialiased) so that its shorter side is `side`."""
    c, h, w = img.shape
    s = side / min(h, w)
    return F.interpolate(img[None], size=(round(h * s), round(w * s)), mode="bilinear", antialias=s < 1,
                         align_corners=False)[0].clamp(0, 1)


def _tiles(img: torch.Tensor, tile: int) -> torch.Tensor:
    """[C, H, W] -> [N, C, tile, tile] non-overlapping tiles (small images are upscaled first)."""
    c, h, w = img.shape
    if min(h, w) < tile:
        s = tile / min(h, w)
        img = F.interpolate(img[None], size=(max(tile, round(h * s)), max(tile, round(w * s))),
                            mode="bilinear", align_corners=False)[0]
        c, h, w = img.shape
    t = img[:, : h // tile * tile, : w // tile * tile].unfold(1, tile, tile).unfold(2, tile, tile)
    return t.permute(1, 2, 0, 3, 4).reshape(-1, c, tile, tile)  # [nh * nw, C, tile, tile]


def _faces(split: str) -> torch.Tensor:
    import skimage.data

    faces = torch.from_numpy(skimage.data.lfw_subset()[:100].astype(np.float32))[:, None]  # [100, 1, 25, 25]
    faces = faces[:, :, :24, :24]  # crop to a size the U-Nets take
    return _by_fraction(faces, split)


def _by_fraction(x: torch.Tensor, split: str, val: float = 0.15, test: float = 0.15) -> torch.Tensor:
    """The first 70% train, the next 15% val, the last 15% test (disjoint, in the set's own order)."""
    n_val, n_test = round(val * len(x)), round(test * len(x))
    n_train = len(x) - n_val - n_test
    return {"train": x[:n_train], "val": x[n_train:n_train + n_val], "test": x[n_train + n_val:]}[split]


def _digits(split: str, size: int = 32) -> torch.Tensor:
    from sklearn.datasets import load_digits

    d = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)[:, None]  # [1797, 1, 8, 8]
    d = F.interpolate(d, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return _by_fraction(d, split)


def _torchvision(name: str, root: str | None, split: str, download: bool) -> torch.Tensor:
    import torchvision

    if root is None:
        raise ValueError(f"dataset {name!r} needs a data root (--data-root); it is never fetched unless asked")
    root_path = Path(root).expanduser()
    if not download and not root_path.is_dir():
        raise FileNotFoundError(f"data root {str(root_path)!r} does not exist (dataset {name!r})")
    cls = getattr(torchvision.datasets, TORCHVISION[name])
    try:
        ds = cls(str(root_path), train=split != "test", download=download)
    except RuntimeError as e:
        raise FileNotFoundError(f"dataset {name!r} not found under {str(root_path)!r}: {e}") from None
    data = torch.as_tensor(np.asarray(ds.data))
    data = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # [N, C, H, W]
    data = data.float() / 255.0
    if data.shape[-1] == 28:  # MNIST-likes: pad to 32 so every U-Net takes them
        data = F.pad(data, (2, 2, 2, 2))
    if split != "test":  # validation: the last tenth of the official training split
        n_val = len(data) // 10
        data = data[len(data) - n_val:] if split == "val" else data[:len(data) - n_val]
    return data


MAX_PIXELS = 64 * 2**20  # 64 megapixels (8192 x 8192): larger files are refused before decoding


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """One image file as [C, H, W] float32 in [0, 1]. A ValueError names the file when it is not an
    image, is truncated, or has more than `max_pixels` pixels (a decompression bomb is refused from
    its header, before any pixel is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # our own limit below replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise ValueError(f"{w}x{h} pixels is more than the {max_pixels / 2**20:.0f} megapixels allowed")
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                return _from_numpy((a / (65535.0 if a.max() > 255 else 255.0)).astype(np.float32))
            if im.mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.mode else "RGB")
            return _from_numpy(np.asarray(im))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from None


def _folder_files(folder: Path, split: str) -> list[Path]:
    """The image files of `folder` in a split, split by file (sorted by name): every fifth (the 5th, 10th
    ...) is validation and the one before it test; with fewer than 5 files, the last is validation and the
    one before it test (with 2 files, test is the validation file: there is no third to hold out)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(files) >= 2:
        val = [f for i, f in enumerate(files) if i % 5 == 4] or files[-1:]
        test = [f for i, f in enumerate(files) if i % 5 == 3] if len(files) >= 5 else \
            (files[-2:-1] if len(files) >= 3 else val)
        files = {"val": val, "test": test}.get(split) or [f for f in files if f not in val and f not in test]
    return files


def random_crops(data: torch.Tensor, n: int, crop: int, generator: torch.Generator) -> torch.Tensor:
    """`n` random crops [n, C, crop, crop] with random flips, gathered on data's device in one go."""
    N, C, H, W = data.shape
    if crop > min(H, W):
        raise ValueError(f"crop={crop} is larger than the dataset's images ({H}x{W})")
    dev = data.device
    idx = torch.randint(0, N, (n,), generator=generator, device=dev)
    y0 = torch.randint(0, H - crop + 1, (n,), generator=generator, device=dev)
    x0 = torch.randint(0, W - crop + 1, (n,), generator=generator, device=dev)
    r = torch.arange(crop, device=dev)
    rows = (y0[:, None] + r)[:, None, :, None]  # [n, 1, crop, 1]
    cols = (x0[:, None] + r)[:, None, None, :]  # [n, 1, 1, crop]
    out = data[idx[:, None, None, None], torch.arange(C, device=dev)[None, :, None, None], rows, cols]
    flip = torch.rand((n, 1, 1, 1), generator=generator, device=dev) < 0.5
    return torch.where(flip, out.flip(-1), out)


def fixed_crops(data: torch.Tensor, crop: int, limit: int, sources: list[str] | None = None) -> torch.Tensor:
    """Deterministic evaluation crops (see `fixed_crops_and_rows`)."""
    return fixed_crops_and_rows(data, crop, limit, sources)[0]


def fixed_crops_and_rows(data: torch.Tensor, crop: int, limit: int,
                         sources: list[str] | None = None) -> tuple[torch.Tensor, list[int]]:
    """Deterministic evaluation crops: a grid of non-overlapping textured crops, `limit` of them evenly
    spaced; with `sources` (the source image of each row of `data`), as many from each source as `limit`
    allows (the first `limit % n_sources` sources give one more), so that no photograph weighs more in a
    mean because it is larger. Returns the crops and the row of `data` each was cut from."""
    N, C, H, W = data.shape
    crop = min(crop, H, W)
    grid = data[:, :, : H // crop * crop, : W // crop * crop].unfold(2, crop, crop).unfold(3, crop, crop)
    crops = grid.permute(0, 2, 3, 1, 4, 5).reshape(-1, C, crop, crop)
    rows = torch.arange(N).repeat_interleave(grid.shape[2] * grid.shape[3])
    # a flat crop (a black border, say) has nothing to denoise, and a model that outputs its constant
    # exactly scores an infinite PSNR there: such crops are left out when others exist
    textured = crops.flatten(1).std(1) > 1 / 255
    if textured.any():
        crops, rows = crops[textured], rows[textured]
    if sources is None:
        pick = _spread(torch.arange(len(crops)), limit)
    else:
        names = list(dict.fromkeys(sources))  # in the data's order
        of = torch.tensor([names.index(sources[r]) for r in rows.tolist()])
        pick = torch.cat([_spread(torch.nonzero(of == i).flatten(), limit // len(names) + (i < limit % len(names)))
                          for i in range(len(names))])
    return crops[pick].contiguous(), rows[pick].tolist()


def _spread(index: torch.Tensor, k: int) -> torch.Tensor:
    """`k` of `index` evenly spaced (all of them when there are no more than `k`)."""
    return index if len(index) <= k else index[torch.linspace(0, len(index) - 1, k).long()]
