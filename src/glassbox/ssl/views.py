"""Views: two random versions of one example that should embed alike.

Written here in plain PyTorch, batched, because torchvision (and lightly,
which needs it) does not load beside the CPU build of torch these machines
use. Every view takes a ``torch.Generator`` so a seeded run draws the same
views again.

- tables, SCARF (Bahri et al., ICLR 2022): each feature of a row is, with
  probability ``corruption``, replaced by the same feature of another random
  training row, i.e. a draw from that feature's empirical marginal;
- images: random resized crop, small rotation and translation as one affine
  warp per image (``grid_sample``), then Gaussian noise;
- text: cropping to a random window and masking random spans of bytes.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.rand(4, 1, 8, 8)
>>> image_view(x, g).shape
torch.Size([4, 1, 8, 8])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MASK_BYTE = 0  # NUL never occurs in source text, so it is free to stand for "masked"


def marginal_corrupt(
    x: torch.Tensor, pool: torch.Tensor, p: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (B, F) with each entry, with probability ``p``, drawn from its column's marginal in ``pool``.

    A replaced entry takes the value of the same column in a uniformly drawn
    row of ``pool`` (N, F), independently per entry, so every column keeps its
    own distribution. Returns ``(corrupted x, mask (B, F) bool, True = replaced)``.
    """
    B, n_feat = x.shape
    mask = torch.rand(B, n_feat, generator=g) < p  # (B, F)
    rows = torch.randint(0, len(pool), (B, n_feat), generator=g)  # (B, F)
    draws = pool[rows, torch.arange(n_feat)]  # (B, F): column j from a random row
    return torch.where(mask, draws.to(x.dtype), x), mask


def scarf_view(x: torch.Tensor, pool: torch.Tensor, corruption: float, g: torch.Generator) -> torch.Tensor:
    """SCARF's view of ``x`` (B, F): a ``corruption`` fraction of entries replaced by marginal draws."""
    return marginal_corrupt(x, pool, corruption, g)[0]


def affine_params(
    B: int,
    g: torch.Generator,
    scale: tuple[float, float] = (0.8, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    degrees: float = 12.0,
    translate: float = 0.1,
) -> torch.Tensor:
    """(B, 2, 3) affine matrices for ``F.affine_grid``: crop of random area and aspect, rotation, shift.

    Output coordinates map to input coordinates (the convention of
    ``affine_grid``), so a crop covering a fraction ``s`` of the area has
    side factors ``sqrt(s * r)`` and ``sqrt(s / r)``.
    """
    u = torch.rand(B, 5, generator=g)  # (B, 5): area, log-aspect, angle, shift x, shift y
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = log_r.exp()
    sx, sy = (area * r).sqrt().clamp(max=1.0), (area / r).sqrt().clamp(max=1.0)
    angle = (2 * u[:, 2] - 1) * math.radians(degrees)
    # A crop may sit anywhere inside the image; the extra shift moves the whole
    # picture by up to `translate` of its side (affine_grid spans [-1, 1], so x2).
    tx = (2 * u[:, 3] - 1) * (1 - sx + 2 * translate)
    ty = (2 * u[:, 4] - 1) * (1 - sy + 2 * translate)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [torch.stack([sx * cos, -sy * sin, tx], 1), torch.stack([sx * sin, sy * cos, ty], 1)], 1
    )  # (B, 2, 3)
    return theta


def image_view(
    x: torch.Tensor,
    g: torch.Generator,
    *,
    scale: tuple[float, float] = (0.8, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    degrees: float = 12.0,
    translate: float = 0.0,
    noise: float = 0.05,
    background: float | None = None,
) -> torch.Tensor:
    """A random crop-rotate-shift of each image in ``x`` (B, C, H, W), plus noise, same size.

    Pixels warped in from outside the image take ``background`` (default:
    each image's minimum, the paper colour of a scan). ``noise`` is the
    standard deviation of the added Gaussian noise relative to each image's
    value range. Defaults are mild on purpose: an 8 x 8 digit cropped to
    half its area is often another digit, and the crop's own position
    already shifts it, so no further ``translate`` (a shift of 0.1 of the
    side on top dropped a pixel SVM trained on clean digits from 97 % to 59 %).
    """
    B = x.shape[0]
    theta = affine_params(B, g, scale=scale, ratio=ratio, degrees=degrees, translate=translate).to(x.dtype)
    lo = (
        x.amin(dim=(1, 2, 3), keepdim=True)
        if background is None
        else torch.full_like(x[:, :1, :1, :1], background)
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    # grid_sample pads with zeros; shifting by the background first and back after
    # pads with the background instead.
    out = F.grid_sample(x - lo, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + lo
    if noise > 0:
        span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp(min=1e-6)
        out = out + noise * span * torch.randn(out.shape, generator=g, dtype=out.dtype)
    return out


def span_mask(
    x: torch.Tensor, g: torch.Generator, ratio: float = 0.15, span: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bytes ``x`` (B, T) with random spans of about ``span`` bytes set to ``MASK_BYTE``, and the mask.

    Span starts are drawn so that about ``ratio`` of the bytes end up
    masked; returns ``(masked x, mask (B, T) bool)``.
    """
    B, T = x.shape
    starts = torch.rand(B, T, generator=g) < ratio / span  # (B, T)
    # A byte is masked when a span starts at it or at one of the span-1 bytes before it.
    s = starts.float()[:, None, :]  # (B, 1, T)
    covered = F.max_pool1d(F.pad(s, (span - 1, 0)), kernel_size=span, stride=1)[:, 0] > 0  # (B, T)
    return torch.where(covered, torch.full_like(x, MASK_BYTE), x), covered


def text_view(x: torch.Tensor, g: torch.Generator, crop: float = 0.8, ratio: float = 0.15) -> torch.Tensor:
    """A random window of ``crop`` of each sequence ``x`` (B, T), span-masked, right-padded with MASK_BYTE.

    Keeps the length ``T`` so views batch together; the padding is masked
    bytes, which the model already learns to read as "no information".
    """
    B, T = x.shape
    keep = max(1, round(crop * T))
    start = torch.randint(0, T - keep + 1, (B,), generator=g)  # (B,)
    idx = start[:, None] + torch.arange(keep)  # (B, keep)
    window = torch.gather(x, 1, idx)
    out = torch.full_like(x, MASK_BYTE)
    out[:, :keep] = window
    return span_mask(out, g, ratio)[0]
