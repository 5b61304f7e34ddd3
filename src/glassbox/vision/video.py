"""Videos for tracking: generated moving digits with exact masks, and a user's folder of frames.

``moving_digits`` draws 2-3 scikit-learn digits (8x8 sprites, upscaled) on a
noisy canvas, each with its own colour, moving at constant velocity and
bouncing off the walls, stacked in a fixed z-order so they occlude each other.
The ground truth is the *visible* mask of every object in every frame (what
is left after the objects in front are drawn), so a tracker is scored on
what can be seen, as in DAVIS.

>>> v = moving_digits(seed=0, frames=8, size=64, objects=2)
>>> v.frames.shape, v.masks.shape, v.masks.dtype
((8, 3, 64, 64), (2, 8, 64, 64), dtype('bool'))
>>> bool(v.masks[:, 0].any(axis=(1, 2)).all())  # every object is visible on the first frame
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from glassbox.errors import UserError

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Video:
    """Frames in [0, 1] and, for generated videos, the visible mask of every object."""

    frames: np.ndarray  # (T, 3, H, W) float32 in [0, 1]
    masks: np.ndarray | None = None  # (N, T, H, W) bool, visible part after occlusion
    depth: list[int] | None = None  # drawing order, back to front (object indices)
    names: list[str] | None = None  # frame file names, for a loaded video


@lru_cache(maxsize=1)
def _sprites() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target  # (1797, 8, 8) in [0, 1]


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(img)[None, None]
    return F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False)[0, 0].numpy()


def moving_digits(
    seed: int,
    frames: int = 8,
    size: int = 64,
    objects: int | None = None,
    scale: int = 3,
    max_speed: float = 3.0,
    noise: float = 0.05,
) -> Video:
    """One generated video; the same ``seed`` gives the same video.

    ``objects`` None draws 2 or 3. Sprites are ``8 * scale`` pixels; speeds
    are up to ``max_speed`` pixels a frame, so paths cross within a few frames.
    """
    rng = np.random.default_rng(seed)
    images, _ = _sprites()
    n = int(objects) if objects is not None else int(rng.integers(2, 4))
    side = 8 * scale
    for _attempt in range(100):
        sprites = [_upscale(images[rng.integers(len(images))], scale) for _ in range(n)]
        shapes = [s > 0.3 for s in sprites]  # (side, side) bool
        colours = rng.uniform(0.35, 1.0, size=(n, 3)).astype(np.float32)
        colours[np.arange(n), rng.integers(0, 3, size=n)] = 1.0  # one saturated channel keeps them apart
        pos = rng.uniform(0, size - side, size=(n, 2))  # (N, 2) top-left x, y
        vel = rng.uniform(-max_speed, max_speed, size=(n, 2))
        vel += np.sign(vel) * 0.5  # never (almost) still
        depth = [int(i) for i in rng.permutation(n)]  # back to front
        canvas = rng.uniform(0, noise, size=(frames, 3, size, size)).astype(np.float32)
        full = np.zeros((n, frames, size, size), dtype=bool)  # (N, T, H, W) before occlusion
        for t in range(frames):
            for i in depth:
                x, y = np.round(pos[i]).astype(int)
                full[i, t, y : y + side, x : x + side] = shapes[i]
                region = canvas[t, :, y : y + side, x : x + side]
                alpha = sprites[i][None] * shapes[i][None]  # (1, side, side)
                region[:] = region * (1 - alpha) + colours[i][:, None, None] * alpha
            pos += vel
            for k in range(2):  # bounce off the walls
                low, high = pos[:, k] < 0, pos[:, k] > size - side
                vel[low | high, k] *= -1
                pos[:, k] = np.clip(pos[:, k], 0, size - side)
        visible = full.copy()
        for rank, i in enumerate(depth):
            for j in depth[rank + 1 :]:
                visible[i] &= ~full[j]
        if (visible[:, 0].sum(axis=(1, 2)) >= 15).all():  # each object can be prompted on frame 0
            frames_arr = np.clip(canvas + rng.normal(0, noise / 2, canvas.shape), 0, 1).astype(np.float32)
            return Video(frames=frames_arr, masks=visible, depth=depth)
    raise RuntimeError(f"could not place {n} visible digits on a {size}x{size} canvas (seed {seed})")


def occlusion_fraction(video: Video) -> float:
    """The share of object pixels hidden by objects in front (each object's largest visible area = whole)."""
    assert video.masks is not None
    areas = video.masks.sum(axis=(2, 3)).astype(np.float64)  # (N, T)
    whole = areas.max(axis=1, keepdims=True)  # a rigid sprite: its largest visible area is all of it (nearly)
    return float((whole - areas).sum() / max(whole.sum() * areas.shape[1], 1.0))


def load_frames(folder: str | Path) -> Video:
    """A user's video: the PNG/JPEG frames of ``folder`` in name order, as RGB in [0, 1].

    >>> import tempfile
    >>> load_frames(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    glassbox.errors.UserError: ... has no frames (.png, .jpg, .jpeg); give a folder of video frames
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a folder of video frames (PNG or JPEG)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise UserError(
            f"{folder} has no frames ({', '.join(FRAME_SUFFIXES)}); give a folder of video frames"
        )
    arrays = []
    for p in files:
        try:
            with Image.open(p) as im:
                arrays.append(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)  # (H, W, 3)
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"cannot read frame {p}: {type(e).__name__}; remove it or replace it") from None
        if arrays[-1].shape != arrays[0].shape:
            h0, w0 = arrays[0].shape[:2]
            h, w = arrays[-1].shape[:2]
            raise UserError(
                f"frames differ in size: {files[0].name} is {w0}x{h0}, {p.name} is {w}x{h};"
                " resize them to one size"
            )
    frames = np.stack(arrays).transpose(0, 3, 1, 2).copy()  # (T, 3, H, W)
    return Video(frames=frames, names=[p.name for p in files])


def save_frames(video: Video, folder: str | Path) -> list[Path]:
    """Write ``video.frames`` as ``00000.png, ...`` (for tests and demos); returns the paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, f in enumerate(video.frames):
        p = folder / f"{t:05d}.png"
        Image.fromarray((f.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def sample_point(mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """A random (x, y) pixel centre inside ``mask`` (H, W), preferring pixels away from its edge."""
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    inner = (-F.max_pool2d(-m, 3, stride=1, padding=1))[0, 0].numpy() > 0.5  # eroded by one pixel
    ys, xs = np.nonzero(inner if inner.any() else mask)
    k = int(rng.integers(len(xs)))
    return float(xs[k]) + 0.5, float(ys[k]) + 0.5
