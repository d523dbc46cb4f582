"""Datasets as tensors, and crops drawn on the device.

    train = load_dataset("natural", split="train", channels=1)   # [N, C, T, T] float32 in [0, 1]

Where images come from is `denoise_core.sources` (a registry: bundled sets, torchvision sets,
folders, the literature's standard sets by name). This module turns a source's images into what a
trial holds: whole images of different sizes are cut into non-overlapping `tile` x `tile` tiles so
that one tensor holds a whole split; training crops are drawn from the tiles on the device.

`split` is train, val or test (a source's own three disjoint parts) or all (every image of it: a
study that names one source per split reads each whole).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from denoise_core.sources import IMAGE_SUFFIXES, MAX_PIXELS, NATURAL_TEST, NATURAL_TRAIN, NATURAL_VAL, PARTS, \
    SOURCES, check_splits, image_files, parse, read_image, split_files, split_source

# what other modules import from here: this module's own, and the sources' names they read images through
__all__ = ["SPLITS", "BUNDLED", "NATURAL_SHOWCASE", "NATURAL_TEST", "NATURAL_TRAIN", "NATURAL_VAL", "IMAGE_SUFFIXES",
           "MAX_PIXELS", "SOURCES", "check_dataset_name", "load_dataset", "load_split", "load_whole", "check_source",
           "showcase_image", "to_channels", "read_image", "image_files", "split_files", "split_source", "random_crops",
           "fixed_crops", "fixed_crops_and_rows", "stacked", "views", "own_channels"]
SPLITS = ("train", "val", "test")
BUNDLED = ["natural", "faces", "digits"]
TILE = 128  # the side of the tiles whole training images are cut into: no training crop is larger
NATURAL_SHOWCASE = {"val": "camera", "test": "motorcycle"}  # the whole image the report shows per split


def check_dataset_name(name) -> None:
    """A source name, or {train, val, test} -> source names."""
    if isinstance(name, dict):
        if set(name) != set(SPLITS):
            raise ValueError(f"dataset: one source, or one per split with exactly the keys {', '.join(SPLITS)} "
                             f"(got {', '.join(map(str, name)) or 'none'})")
        for split, n in name.items():
            try:
                parse(n)
            except ValueError as e:
                raise ValueError(f"dataset.{split}: {e}") from None
    else:
        parse(name)
    check_splits(name)


def load_dataset(name: str, root: str | None = None, split: str = "train", channels: int = 1,
                 tile: int = TILE, download: bool = False, limit: int | None = None) -> torch.Tensor:
    """One split of a source as a float32 tensor [N, channels, H, W] in [0, 1] on the CPU."""
    return load_split(name, root, split, channels, tile, download, limit)[0]


def load_split(name: str, root: str | None = None, split: str = "train", channels: int = 1, tile: int = TILE,
               download: bool = False, limit: int | None = None) -> tuple[torch.Tensor, list[str] | None]:
    """`load_dataset(...)` and the source image of each of its rows (a photograph's or a file's name: its
    tiles are not independent images), or None for the sources where every row is its own image."""
    source, arg = parse(name)
    if split not in PARTS:
        raise ValueError(f"split={split!r}; allowed: {', '.join(PARTS)}")
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}; allowed: 1, 3")
    images, names = source.load(arg, root, split, download)
    sources = None
    if isinstance(images, torch.Tensor):
        x = to_channels(images, channels)
    else:  # each image converted before its tiles are cut (a real-noise scene's views, one by one)
        x, sources = _tiled(images, names, channels, tile)
    if limit is not None:
        x, sources = x[:limit], sources and sources[:limit]
    return x.contiguous(), sources


def load_whole(name: str, root: str | None, split: str, channels: int, download: bool = False,
               limit: int | None = None) -> tuple[list[torch.Tensor], list[str]]:
    """A split's images whole ([C, H, W] each, any size) with their names: what the literature scores. A source
    of small images gives each as its own (named by index)."""
    source, arg = parse(name)
    images, names = source.load(arg, root, split, download)
    if isinstance(images, torch.Tensor):
        images, names = list(images), [f"{i:05d}" for i in range(len(images))]
    images = [stacked(to_channels(im, channels)) for im in images]
    return (images[:limit], names[:limit]) if limit else (images, names)


def own_channels(name: str, root: str | None = None, download: bool = False) -> int:
    """A source's own channels: 3 when any of its images is colour (three channels that are not all equal), else 1;
    a standard set's are known by name."""
    from denoise_core.sources import STANDARD

    if name in STANDARD:
        return 3 if STANDARD[name].colour else 1
    source, arg = parse(name)
    images, _ = source.load(arg, root, "all", download)

    def colour(im: torch.Tensor) -> bool:  # [.., C, H, W]
        return im.shape[-3] >= 3 and not (torch.equal(im[..., 0, :, :], im[..., 1, :, :])
                                          and torch.equal(im[..., 1, :, :], im[..., 2, :, :]))

    return 3 if any(colour(im) for im in images) else 1


def stacked(img: torch.Tensor) -> torch.Tensor:
    """An image [C, H, W] as it is; a real-noise scene's views [V, C, H, W] stacked along the channels
    [V * C, H, W], so that a crop cuts every view at one place (`views` takes them apart again)."""
    return img.reshape(-1, *img.shape[-2:]).contiguous()


def views(x: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked views [..., (1 + K) * C, H, W] -> (clean [..., C, H, W], captures [..., K, C, H, W])."""
    if x.shape[-3] % channels or x.shape[-3] < 2 * channels:
        raise ValueError(f"expected a clean view and one or more captures of {channels} channel(s) each, "
                         f"got {x.shape[-3]} channels")
    v = x.unflatten(-3, (x.shape[-3] // channels, channels))
    return v[..., 0, :, :, :], v[..., 1:, :, :, :]


def check_source(name: str, root: str | None = None, channels: int = 1, download: bool = False,
                 parts: tuple[str, ...] = SPLITS) -> dict[str, int]:
    """Check a source and load each part a study reads as a trial would, so that a missing or incomplete
    set, an empty folder, a truncated or unreadable image, or a torchvision set absent from its root fails
    before any trial runs: a ValueError whose one line names the source, the part and the problem. Returns each
    part's largest crop side as a trial loads it (the short side of its images or tiles)."""
    source, arg = parse(name)
    source.check(arg, root, download)
    sides = {}
    for part in parts:
        try:
            x, _ = load_split(name, root, part, channels, download=download)
        except (OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"dataset {name!r}, split {part}: {str(e).splitlines()[0]}") from None
        if len(x) == 0:
            raise ValueError(f"dataset {name!r}, split {part}: holds no images")
        sides[part] = min(x.shape[-2:])
    return sides


def _tiled(images: list[torch.Tensor], names: list[str], channels: int, tile: int):
    """Source images -> (one tensor of all their tiles, the source name of each tile). Real-noise views are never
    upscaled (interpolation would smooth their noise): their tiles are at most the smallest scene's short side."""
    if images and images[0].ndim == 4:
        tile = min(tile, *(min(im.shape[-2:]) for im in images))
    tiles = [_tiles(to_channels(im, channels), tile) for im in images]
    return torch.cat(tiles), [n for n, t in zip(names, tiles) for _ in range(len(t))]


def showcase_image(name: str, root: str | None = None, channels: int = 1, download: bool = False,
                   split: str = "test", multiple: int = 32, max_side: int = 160) -> torch.Tensor:
    """One whole image [1, C, H, W] of a split for the report (not a crop): the split's first source image,
    centre-cropped to a multiple of `multiple` (any model takes it) and at most `max_side`."""
    if name == "natural" and split in NATURAL_SHOWCASE:
        from denoise_core.sources import _skimage

        img = to_channels(_skimage(NATURAL_SHOWCASE[split]), channels)[None]
    else:
        images, _ = load_whole(name, root, split, channels, download, limit=1)
        img = images[0][None]
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


def _tiles(img: torch.Tensor, tile: int) -> torch.Tensor:
    """[C, H, W] (or views [V, C, H, W], stacked) -> [N, C, tile, tile] non-overlapping tiles (small images are
    upscaled first)."""
    img = stacked(img)
    c, h, w = img.shape
    if min(h, w) < tile:
        s = tile / min(h, w)
        img = F.interpolate(img[None], size=(max(tile, round(h * s)), max(tile, round(w * s))),
                            mode="bilinear", align_corners=False)[0]
        c, h, w = img.shape
    t = img[:, : h // tile * tile, : w // tile * tile].unfold(1, tile, tile).unfold(2, tile, tile)
    return t.permute(1, 2, 0, 3, 4).reshape(-1, c, tile, tile)  # [nh * nw, C, tile, tile]


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
