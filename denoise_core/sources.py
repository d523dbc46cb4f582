"""Where images come from: data sources by name, each one registered here once.

    images, names = SOURCES.get("Set12").load(arg="", root="/data", part="all", download=False)

A study names one source for every split (`dataset: natural`) or one per split
(`dataset: {train: Train400, val: Set12, test: BSD68}`); `split_source` turns either into the
(source, part) a split reads, where part is train, val or test (the source's own split into three
disjoint parts) or `all` (every image of it). A source gives either whole images (a list of
[C, H, W] float32 tensors in [0, 1], with their file names) or a tensor [N, C, H, W] of small
images, each its own.

    natural, faces, digits        bundled with scikit-image / scikit-learn: no network
    mnist, fashion_mnist, cifar10 torchvision's files under --data-root (downloaded only when asked)
    folder:PATH                   every image file in PATH (PNG, JPEG, TIFF, BMP; gray, RGB, RGBA, 16-bit)
    pairs:PATH                    real noise: PATH/<scene>/clean.png (if known) and two or more noisy captures
                                  of the scene; its images are views [1 + K, C, H, W], view 0 the clean one
    noisy:PATH                    real noise, training only: every image file in PATH is the one noisy capture of
                                  its scene, no clean image known (views [2, C, H, W], view 0 NaN); the
                                  self-supervised schemes train on it, validation and test need pairs:PATH
    Train400, BSD400, BSD68, CBSD68, Set12, Kodak24, McMaster, Urban100
                                  the literature's sets, as their authors lay them out: a folder of that
                                  name under --data-root, checked for its image count and sizes

`check(arg, root, download)` fails with one line that names the source, the path it looked at, and
what it expected there: a study checks every source before Ray starts.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from denoise_core.registry import Registry

SPLIT_NAMES = ("train", "val", "test")
PARTS = (*SPLIT_NAMES, "all")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}

# three disjoint parts of the bundled photographs, by source image: tuning and early stopping see `val`,
# findings use `test` (eight photographs, each scaled to a short side of HELD_OUT_SIDE)
NATURAL_TRAIN = ["chelsea", "coffee", "coins", "moon", "hubble_deep_field",
                 "immunohistochemistry", "brick", "grass", "gravel", "clock"]
NATURAL_VAL = ["camera", "astronaut"]
NATURAL_TEST = ["motorcycle", "rocket", "retina", "page", "text", "cell", "logo", "microaneurysms"]
HELD_OUT_SIDE = 256

Loaded = tuple["list[torch.Tensor] | torch.Tensor", "list[str] | None"]


@dataclass(frozen=True)
class Source:
    """One kind of data source. `load(arg, root, part, download)` -> (images, names): whole images with
    their names, or a tensor of small images (names None). `check` raises a ValueError when the source
    cannot give every part a study asks of it."""

    name: str
    load: Callable[..., Loaded]
    check: Callable[[str, str | None, bool], None] = lambda arg, root, download: None
    whole: bool = True  # its images are photographs, scored whole under the literature's protocol
    captures: bool = False  # its images are real-noise views (clean + captures, `denoise_core.data.views`)
    train_only: bool = False  # one capture of each image and no clean one: nothing to score against
    about: str = ""


SOURCES: Registry[Source] = Registry("dataset")
WITH_PATH = ("folder", "pairs", "noisy")  # sources named with their folder: folder:PATH, pairs:PATH


def parse(name: str) -> tuple[Source, str]:
    """'folder:/data/x' -> (the folder source, '/data/x'); 'Set12' -> (Set12, ''). The one place a source
    name is parsed."""
    kind, sep, arg = name.partition(":")
    if not isinstance(name, str) or kind not in SOURCES or (sep and not arg) or (not sep and kind in WITH_PATH):
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(n + (':PATH' if n in WITH_PATH else '') for n in SOURCES.names)}")
    return SOURCES.get(kind), arg


def check_splits(dataset: "str | dict[str, str]") -> None:
    """A training-only source (noisy:PATH) is named for the train split alone: validation and test are scored
    against clean images."""
    for split in ("val", "test"):
        name = split_source(dataset, split)[0]
        if parse(name)[0].train_only:
            raise ValueError(f"{name} holds noisy captures with no clean image, so it can only train; "
                             f"{split} images are scored against clean ones: give val and test pairs:PATH "
                             f"(scenes with clean.png) or a set with clean images")


def has_captures(dataset: "str | dict[str, str]") -> list[bool]:
    """For the train, val and test splits in turn: whether the split reads real-noise captures (pairs:PATH)."""
    return [parse(split_source(dataset, split)[0])[0].captures for split in ("train", "val", "test")]


def split_source(dataset: "str | dict[str, str]", split: str) -> tuple[str, str]:
    """The (source, part) a split reads: one source split three ways, or a source per split read whole."""
    if isinstance(dataset, dict):
        return dataset[split], "all"
    return dataset, split


def shared_splits(dataset: "str | dict[str, str]") -> list[tuple[str, str, str]]:
    """(split, split, source) for every two splits that read the same images: one source named for both (allowed:
    the literature often validates on its test set, but test scores are then not held out). One source split
    three ways shares nothing."""
    if not isinstance(dataset, dict):
        return []
    same = lambda name: name.rstrip("/")  # noqa: E731 - folder:PATH and folder:PATH/ are one folder
    return [(a, b, dataset[a]) for i, a in enumerate(SPLIT_NAMES) for b in SPLIT_NAMES[i + 1:]
            if same(dataset[a]) == same(dataset[b])]


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """An image array (H, W) or (H, W, C), any integer or float type -> [C, H, W] float32 in [0, 1]."""
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max if a.max() > 255 else 255)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t.clamp(0, 1)


def by_fraction(x, part: str, val: float = 0.15, test: float = 0.15):
    """The first 70% train, the next 15% val, the last 15% test (disjoint, in the set's own order); all."""
    if part == "all":
        return x
    n_val, n_test = round(val * len(x)), round(test * len(x))
    n_train = len(x) - n_val - n_test
    return {"train": x[:n_train], "val": x[n_train:n_train + n_val], "test": x[n_train + n_val:]}[part]


# -- bundled ----------------------------------------------------------------------------------------
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


def _natural(arg, root, part, download) -> Loaded:
    names = {"train": NATURAL_TRAIN, "val": NATURAL_VAL, "test": NATURAL_TEST,
             "all": NATURAL_TRAIN + NATURAL_VAL + NATURAL_TEST}[part]
    images = [_skimage(n) for n in names]
    if part == "test":
        images = [_short_side(im, HELD_OUT_SIDE) for im in images]
    return images, names


def _faces(arg, root, part, download) -> Loaded:
    import skimage.data

    faces = torch.from_numpy(skimage.data.lfw_subset()[:100].astype(np.float32))[:, None]  # [100, 1, 25, 25]
    return by_fraction(faces[:, :, :24, :24], part), None  # cropped to a size the U-Nets take


def _digits(arg, root, part, download, size: int = 32) -> Loaded:
    from sklearn.datasets import load_digits

    d = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)[:, None]  # [1797, 1, 8, 8]
    d = F.interpolate(d, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return by_fraction(d, part), None


SOURCES.add("natural", Source("natural", _natural, about="scikit-image's photographs, split by photograph"))
SOURCES.add("faces", Source("faces", _faces, whole=False, about="scikit-image's LFW subset, 24x24"))
SOURCES.add("digits", Source("digits", _digits, whole=False, about="scikit-learn's 8x8 digits, resized to 32x32"))


# -- torchvision sets under a data root ----------------------------------------------------------------
TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def _torchvision(name: str):
    def load(arg, root, part, download) -> Loaded:
        import torchvision

        if root is None:
            raise ValueError(f"dataset {name!r} needs a data root (--data-root); it is never fetched unless asked")
        root_path = Path(root).expanduser()
        if not download and not root_path.is_dir():
            raise FileNotFoundError(f"data root {str(root_path)!r} does not exist (dataset {name!r})")
        cls = getattr(torchvision.datasets, TORCHVISION[name])
        try:
            ds = [cls(str(root_path), train=t, download=download) for t in
                  ((part != "test",) if part != "all" else (True, False))]
        except RuntimeError as e:
            raise FileNotFoundError(f"dataset {name!r} not found under {str(root_path)!r}: {e}") from None
        data = torch.cat([torch.as_tensor(np.asarray(d.data)) for d in ds])
        data = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # [N, C, H, W]
        data = data.float() / 255.0
        if data.shape[-1] == 28:  # MNIST-likes: pad to 32 so every U-Net takes them
            data = F.pad(data, (2, 2, 2, 2))
        if part in ("train", "val"):  # validation: the last tenth of the official training split
            n_val = len(data) // 10
            data = data[len(data) - n_val:] if part == "val" else data[:len(data) - n_val]
        return data, None

    return load


for _name in TORCHVISION:
    SOURCES.add(_name, Source(_name, _torchvision(_name), whole=False, about=f"torchvision's {TORCHVISION[_name]} under --data-root"))


# -- folders ----------------------------------------------------------------------------------------------
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
            if im.mode == "F":  # 32-bit float (microscopy, HDR): [0, 1] as it is, else an 8- or 16-bit range
                a = np.array(im, dtype=np.float32)
                top = float(np.nanmax(a)) if np.isfinite(a).any() else 1.0
                return _from_numpy(a if top <= 1 else a / (255.0 if top <= 255 else 65535.0))
            if im.mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.mode else "RGB")
            return _from_numpy(np.asarray(im))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from None


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def split_files(files: list[Path], part: str) -> list[Path]:
    """A folder split by file (sorted by name): every fifth (the 5th, 10th ...) is validation and the one
    before it test; with fewer than 5 files, the last is validation and the one before it test (with 2
    files, test is the validation file: there is no third to hold out); `all`: every file."""
    if part == "all" or len(files) < 2:
        return files
    val = [f for i, f in enumerate(files) if i % 5 == 4] or files[-1:]
    test = [f for i, f in enumerate(files) if i % 5 == 3] if len(files) >= 5 else \
        (files[-2:-1] if len(files) >= 3 else val)
    return {"val": val, "test": test}.get(part) or [f for f in files if f not in val and f not in test]


def _read_files(files: list[Path]) -> Loaded:
    return [read_image(f) for f in files], [f.name for f in files]


def _folder(arg, root, part, download) -> Loaded:
    return _read_files(split_files(image_files(Path(arg).expanduser()), part))


SOURCES.add("folder", Source("folder", _folder, about="folder:PATH, every image file in PATH, split by file"))


# -- real noise: scenes of noisy captures ----------------------------------------------------------------------
CLEAN_STEMS = ("clean", "gt")  # a scene's clean image, if known: clean.png, gt.tif ... (any case)


@dataclass(frozen=True)
class Scene:
    """One scene of a `pairs:PATH` source: its folder, its clean image (None: not known) and its noisy captures
    (every other image file, by name), listed once."""

    path: Path
    clean: Path | None
    captures: tuple[Path, ...]

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def of(cls, folder: Path) -> "Scene":
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        clean = [p for p in files if p.stem.lower() in CLEAN_STEMS]
        if len(clean) > 1:
            raise ValueError(f"scene {str(folder)!r} has {len(clean)} clean images ({', '.join(p.name for p in clean)}); "
                             f"expected at most one")
        return cls(folder, clean[0] if clean else None, tuple(p for p in files if p not in clean))


def pair_scenes(folder: Path) -> list[Scene]:
    """The scenes of a `pairs:PATH` source, by folder name, each checked for two or more captures."""
    if not folder.is_dir():
        raise FileNotFoundError(f"pairs folder {str(folder)!r} does not exist")
    scenes = [Scene.of(p) for p in sorted(folder.iterdir()) if p.is_dir()]
    if not scenes:
        raise ValueError(f"pairs folder {str(folder)!r} holds no scene folders (each: clean.png if known, and two "
                         f"or more noisy captures)")
    for scene in scenes:
        if len(scene.captures) < 2:
            raise ValueError(f"scene {str(scene.path)!r} has {len(scene.captures)} noisy capture(s); "
                             f"expected two or more (and clean.png, if known)")
    return scenes


def read_scene(scene: Scene, captures: int, need_clean: bool) -> torch.Tensor:
    """A scene as views [1 + captures, C, H, W]: view 0 the clean image (NaN where it is not known), then its
    first `captures` captures by name. Every view must have the clean image's size and channels."""
    if scene.clean is None and need_clean:
        raise ValueError(f"scene {str(scene.path)!r} has no clean image (clean.png): the validation and test "
                         f"scenes are scored against it")
    caps = [read_image(p) for p in scene.captures[:captures]]
    clean = read_image(scene.clean) if scene.clean is not None else torch.full_like(caps[0], float("nan"))
    for p, im in zip([scene.clean, *scene.captures], [clean, *caps]):
        if im.shape != caps[0].shape:
            raise ValueError(f"scene {str(scene.path)!r}: {p.name} is {tuple(im.shape)} (C, H, W); its other images "
                             f"are {tuple(caps[0].shape)}")
    return torch.stack([clean, *caps])


def scenes_without_clean(name: str, part: str) -> list[str]:
    """The scenes of a pairs:PATH source's part that have no clean image (none for any other source)."""
    source, arg = parse(name)
    if source.train_only:
        return [f.name for f in _noisy_files(arg, part)]
    if not source.captures:
        return []
    return [s.name for s in split_files(pair_scenes(Path(arg).expanduser()), part) if s.clean is None]


def _pairs(arg, root, part, download) -> Loaded:
    """Scenes split like a folder's files (by scene name); every scene of a split gives as many captures as the
    one with fewest, so that a split is one stack of views."""
    scenes = split_files(pair_scenes(Path(arg).expanduser()), part)
    k = min(len(s.captures) for s in scenes)
    return [read_scene(s, k, need_clean=part in ("val", "test")) for s in scenes], [s.name for s in scenes]


def _noisy_files(arg: str, part: str) -> list[Path]:
    """The image files of a noisy:PATH source's part, split by file like a folder's."""
    return split_files(image_files(Path(arg).expanduser()), part)


def _noisy(arg, root, part, download) -> Loaded:
    """Each image file of the folder as the views of a scene with no clean image: [NaN view, the capture]."""
    files = _noisy_files(arg, part)
    captures = [read_image(f) for f in files]
    return [torch.stack([torch.full_like(c, float("nan")), c]) for c in captures], [f.name for f in files]


SOURCES.add("noisy", Source("noisy", _noisy, captures=True, train_only=True,
                            about="noisy:PATH, real noise for training only: one noisy capture per image file, "
                                  "no clean images (the self-supervised schemes train on it)"))
SOURCES.add("pairs", Source("pairs", _pairs, captures=True, about="pairs:PATH, real noise: a folder per scene with clean.png (if "
                                                   "known) and two or more noisy captures, split by scene"))

# -- the literature's standard sets --------------------------------------------------------------------------
@dataclass(frozen=True)
class Standard:
    count: int  # images in the set as its authors distribute it
    sides: tuple[int, int]  # the smallest short side and the largest long side, in pixels
    colour: bool
    about: str


STANDARD = {
    "Train400": Standard(400, (180, 180), False, "DnCNN's training set: 400 gray 180x180 crops of BSD"),
    "BSD400": Standard(400, (321, 481), False, "the 400 Berkeley training images, gray"),
    "BSD68": Standard(68, (321, 481), False, "DnCNN's gray test set: 68 Berkeley images, 481x321"),
    "CBSD68": Standard(68, (321, 481), True, "BSD68 in colour (FFDNet, DRUNet)"),
    "Set12": Standard(12, (256, 512), False, "DnCNN's 12 gray test images, 256x256 and 512x512"),
    "Kodak24": Standard(24, (500, 768), True, "the Kodak suite, as FFDNet distributes it (500x500 crops)"),
    "McMaster": Standard(18, (500, 500), True, "18 colour 500x500 images (FFDNet, DRUNet)"),
    "Urban100": Standard(100, (400, 1280), True, "100 urban scenes (SwinIR, Restormer)"),
}


def standard_folder(name: str, root: str | None) -> Path:
    s = STANDARD[name]
    if root is None:
        raise ValueError(f"dataset {name!r} is read from --data-root: give a folder that holds {name}/ "
                         f"({s.count} images, {s.about})")
    return Path(root).expanduser() / name


def check_standard(name: str, root: str | None) -> None:
    """The set's folder holds its `count` images, each within its size range (read from the file headers)."""
    from PIL import Image

    s, folder = STANDARD[name], standard_folder(name, root)
    expect = f"{s.count} images of {s.sides[0]} to {s.sides[1]} pixels a side ({s.about})"
    if not folder.is_dir():
        raise ValueError(f"dataset {name!r}: no folder {str(folder)!r}; expected {expect} there")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) != s.count:
        raise ValueError(f"dataset {name!r}: {str(folder)!r} holds {len(files)} images; expected {expect}")
    for f in files:
        try:
            with Image.open(f) as im:
                w, h = im.size
        except OSError as e:
            raise ValueError(f"dataset {name!r}: cannot read {str(f)!r} ({e})") from None
        if min(w, h) < s.sides[0] or max(w, h) > s.sides[1]:
            raise ValueError(f"dataset {name!r}: {f.name} is {w}x{h}; expected {expect} in {str(folder)!r}")


def _standard(name: str):
    def load(arg, root, part, download) -> Loaded:
        check_standard(name, root)
        return _read_files(split_files(image_files(standard_folder(name, root)), part))

    return load


for _name, _s in STANDARD.items():
    SOURCES.add(_name, Source(_name, _standard(_name), lambda arg, root, download, n=_name: check_standard(n, root),
                              about=_s.about))
