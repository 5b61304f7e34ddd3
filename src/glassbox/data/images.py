"""Image folders: ``images:DIR`` with one sub-folder of images per class.

The layout torchvision's ImageFolder and most tutorials use, so a user's
existing folder works as it is. Every image is brought to one size and one
channel count, because a batch is a single ``(N, C, H, W)`` tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from glassbox.config import DataConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
# Left by unzipping on a Mac; not a class.
IGNORED_FOLDERS = frozenset({"__MACOSX"})


def _class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """(class name, its image files), sorted so the class ids are the same on every machine."""
    if not root.exists():
        raise UserError(f"image folder not found: {root}; check the path after images: in data.source")
    if not root.is_dir():
        raise UserError(
            f"{root} is a file; images:DIR expects a folder with one sub-folder of images per class"
        )
    folders = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_FOLDERS
    )
    if not folders:
        raise UserError(
            f"{root} has no class sub-folders; put each class's images in its own sub-folder,"
            f" e.g. {root / 'cat'}/1.png and {root / 'dog'}/2.png"
        )
    out = []
    for folder in folders:
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            raise UserError(
                f"class folder {folder} has no images ({', '.join(s[1:] for s in SUFFIXES)});"
                " add images to it or delete it"
            )
        out.append((folder.name, files))
    if len(out) < 2:
        raise UserError(
            f"{root} has only one class folder ('{out[0][0]}'); a classifier needs at least two,"
            " so add a sub-folder of images for another class"
        )
    return out


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I") or im.mode == "F":
        # 16-bit and float images: Pillow's convert clips them to 0..255
        # instead of scaling, which turns most 16-bit scans white.
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max(initial=0.0)
        if im.mode == "F":
            full = 1.0 if top <= 1.0 else 255.0  # floats in [0, 1] or in [0, 255]
        else:
            full = 65535.0 if top > 255 else 255.0
        im = Image.fromarray(np.clip(arr * (255.0 / full), 0, 255).astype(np.uint8))  # mode "L"
    return im.convert("RGB")


def _read(file: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image as ``(H, W, 3)`` uint8, resized to ``size`` (W, H) when given."""
    try:
        with Image.open(file) as opened:
            # Phone photos store their rotation in EXIF rather than in the pixels.
            im = _to_rgb(ImageOps.exif_transpose(opened))
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(im)  # (H, W, 3)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise UserError(f"cannot read image {file}: {reason}; replace or delete the file") from None


def load_image_folder(path: str | Path, cfg: DataConfig) -> Dataset:
    """Images as float ``(N, C, H, W)`` in [0, 1]; classes are the sorted sub-folder names.

    Resized to ``cfg.image_size`` square, or to the first image's size when
    that is None. One channel when every image is grey, else RGB.
    """
    root = Path(path).expanduser()
    folders = _class_folders(root)
    size = (cfg.image_size, cfg.image_size) if cfg.image_size is not None else None
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    for k, (_, files) in enumerate(folders):
        for file in files:
            arr = _read(file, size)
            if size is None:
                size = (arr.shape[1], arr.shape[0])  # Pillow sizes are (W, H)
            pixels.append(arr)
            labels.append(k)
    stack = np.stack(pixels)  # (N, H, W, 3) uint8
    # Grey is judged from the pixels, not the file mode: a grey photo saved
    # as RGB JPEG should not cost three times the memory and compute.
    grey = bool((stack[..., 0] == stack[..., 1]).all() and (stack[..., 1] == stack[..., 2]).all())
    if grey:
        stack = stack[..., :1]  # (N, H, W, 1)
    X = torch.from_numpy(stack).permute(0, 3, 1, 2).float().div_(255.0).contiguous()  # (N, C, H, W)
    return Dataset(
        name=root.name,
        kind="image",
        task="classification",
        X=X,
        y=torch.tensor(labels, dtype=torch.long),  # (N,)
        classes=[name for name, _ in folders],
        description=f"{len(labels)} images in {len(folders)} classes from {root}",
    )
