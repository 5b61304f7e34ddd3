"""Contact sheets: every frame of a video with its masks drawn over it, one PNG.

>>> import numpy as np
>>> png = contact_sheet(np.zeros((4, 3, 16, 16), np.float32), np.ones((1, 4, 16, 16), bool))
>>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import io

import numpy as np

PALETTE = np.array([[1.0, 0.2, 0.2], [0.2, 0.6, 1.0], [0.2, 1.0, 0.3], [1.0, 0.8, 0.1], [0.9, 0.3, 1.0]])


def overlay(frame: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``frame`` (3, H, W) in [0, 1] with ``masks`` (N, H, W) tinted over it, as (H, W, 3) uint8."""
    img = frame.transpose(1, 2, 0).copy()
    for i, m in enumerate(masks):
        img[m] = (1 - alpha) * img[m] + alpha * PALETTE[i % len(PALETTE)]
    return (img.clip(0, 1) * 255).round().astype(np.uint8)


def contact_sheet(
    frames: np.ndarray,
    masks: np.ndarray,
    rows: list[np.ndarray] | None = None,
    scale: int = 2,
    cols: int | None = None,
) -> bytes:
    """A PNG grid of ``frames`` (T, 3, H, W) with ``masks`` (N, T, H, W) over them.

    ``rows`` adds more mask sets (e.g. the ground truth) as extra rows under the
    first; with ``cols`` the frames wrap instead.
    """
    from PIL import Image

    sets = [masks, *(rows or [])]
    t, _, h, w = frames.shape
    cols = cols or t
    per_set = -(-t // cols)
    gap = 2
    sheet = np.full(
        (len(sets) * per_set * (h * scale + gap), cols * (w * scale + gap), 3), 255, dtype=np.uint8
    )
    for s, m in enumerate(sets):
        for k in range(t):
            r, c = s * per_set + k // cols, k % cols
            tile = overlay(frames[k], m[:, k]).repeat(scale, 0).repeat(scale, 1)
            y, x = r * (h * scale + gap), c * (w * scale + gap)
            sheet[y : y + h * scale, x : x + w * scale] = tile
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="PNG")
    return buf.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """One object's mask (H, W) bool as an 8-bit PNG (0 or 255)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()
