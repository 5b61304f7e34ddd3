"""Gated linear attention (GLA, Yang et al. 2024): linear attention that forgets per key channel.

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T    S: (Dk, Dv), g_t <= 0 per key channel
    o_t = scale * q_t^T S_t                      scale = Dk^-0.5

The log decays ``g`` (B, T, H, Dk) come from the block input through
``GLAGates`` (low rank, ``logsigmoid / 16`` as in the paper); the output is
normalised per head and gated by ``swish(W_r x)`` in ``GLAOutput``.

Training uses the chunkwise form. Decay stays in log space: ``b``, the
cumulative sum of ``g`` from the chunk start, in float32 (float64 for
float64 inputs). Across chunks the state is carried, and every factor there
is ``exp`` of a non-positive number. Inside a chunk the score of query i
and key j <= i is ``sum_d q_id k_jd exp(b_id - b_jd)``. As matmuls it must
be split into a query and a key factor, ``q exp(b - r) . k exp(r - b)``,
which overflow once a chunk decays by more than ~e^-88 (float32) with the
chunk start as reference r. With r half the chunk's decay, each factor is
at most exp(LIMIT / 2) for chunks decaying by up to LIMIT (e^-120 in
float32), which covers any learned gate in practice; a stronger chunk is
redone as a sequence of chunks of SUB steps, and those, if still too
strong, one step at a time, where the score is plain ``q_i . k_i``. So no
g <= 0 overflows, and exactness never rests on a clamp. (The paper's
secondary chunking materialises exact pairwise decays (C, C, Dk) inside
sub-chunks instead; on a CPU that tensor costs more than the matmuls.)

Decoding: ``state={"S": (B, H, Dk, Dv)}`` (``{}`` first) seeds the chunk
form; one token is one recurrent step. Bidirectional (encoders) is the mean
of the causal scan and the causal scan over the time-reversed sequence,
run as one doubled batch; it keeps no state. On CUDA, with
flash-linear-attention installed, the chunk form is fla's ``chunk_gla`` (its
own chunk size; ``chunk_size`` is then ignored).

>>> import torch
>>> q = k = v = torch.randn(1, 9, 2, 4, dtype=torch.float64)  # (B, T, H, D)
>>> g = torch.nn.functional.logsigmoid(torch.randn(1, 9, 2, 4, dtype=torch.float64))
>>> out, state = gla_attention(q, k, v, causal=True, state={}, g=g, chunk_size=4)
>>> ref, _ = naive_gla(q, k, v, causal=True, state={}, g=g)
>>> out.shape, state["S"].shape, torch.allclose(out, ref)
(torch.Size([1, 9, 2, 4]), torch.Size([1, 2, 4, 4]), True)
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from glassbox.nn.attention import KindSpec, State, register_kind
from glassbox.nn.kinds.gla_naive import naive_gla

# Largest log decay, in any channel, of a chunk the fast intra-chunk form
# takes. That form scales queries and keys by exp(+-(b - last / 2)), at
# most exp(LIMIT / 2): ~1e26 in float32, far from overflow even after the
# backward's sums. Stronger chunks are redone as shorter chunks.
LIMIT = {torch.float32: 120.0, torch.float64: 1000.0}
# The shorter chunk length strong chunks are redone with (and then 1). At
# 16 a chunk is strong only if its steps average a decay below e^-7.5.
SUB = 16


def _to_chunks(x: torch.Tensor, C: int) -> torch.Tensor:
    """(B, T, H, D) -> (B, H, N, C, D), the last chunk zero-padded.

    Zero padding is neutral: a zero key writes nothing, a zero log decay
    forgets nothing, and padded queries are dropped.
    """
    B, T, H, D = x.shape
    N = math.ceil(T / C)
    x = x.transpose(1, 2)  # (B, H, T, D)
    if N * C > T:
        x = F.pad(x, (0, 0, 0, N * C - T))
    return x.reshape(B, H, N, C, D)


def _intra_fast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The within-chunk part by matmuls, for chunks (M, C, D) that decay by at most LIMIT."""
    C = k.shape[1]
    # Relative to half the chunk's decay, exp(b_i - b_j) splits into a query
    # and a key factor of at most exp(LIMIT / 2) each. Two exps, not a
    # division by one: division's backward squares the divisor and overflows.
    rel = b - b[:, -1:, :] / 2  # (M, C, Dk)
    scores = (q * rel.exp()) @ (k * (-rel).exp()).transpose(-1, -2)  # (M, C, C)
    # Scores of later keys may overflow (their factors do not cancel); they
    # are replaced, never multiplied, so no inf reaches either pass.
    future = torch.ones(C, C, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(future, 0.0) @ v  # (M, C, Dv)


def _intra(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Within-chunk ``sum_{j <= i} (q_i exp(b_i - b_j) . k_j) v_j`` for chunks (M, C, D), any decay.

    ``b`` is ``g``'s inclusive cumulative sum from the chunk start, non-increasing.
    Chunks that decay by more than LIMIT are redone as sequences of shorter
    chunks, which decay less; a single step needs no decay factor at all,
    so the recursion ends.
    """
    C = k.shape[1]
    if C == 1:
        return (q * k).sum(-1, keepdim=True) * v  # exp(b_i - b_i) = 1
    strong = (-b[:, -1, :]).amax(dim=-1) > LIMIT[q.dtype]  # (M,)
    if not strong.any():
        return _intra_fast(q, k, v, b)

    def redo(idx: torch.Tensor | None) -> torch.Tensor:
        sub = [x if idx is None else x.index_select(0, idx) for x in (q, k, v, g)]
        out, _ = _chunked(*(x[:, :, None] for x in sub), None, SUB if C > SUB else 1)  # (M', C, 1, Dv)
        return out[:, :, 0]

    if strong.all():
        return redo(None)
    weak = (~strong).nonzero().squeeze(1)
    idx = strong.nonzero().squeeze(1)
    out = v.new_zeros(v.shape).index_copy(
        0, weak, _intra_fast(*(x.index_select(0, weak) for x in (q, k, v, b)))
    )
    return out.index_copy(0, idx, redo(idx))


def _chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    S: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise GLA on (B, T, H, D) inputs, q already scaled; returns (B, T, H, Dv) and the final S."""
    B, T, H, Dk = k.shape
    Dv = v.shape[-1]
    C = min(chunk_size, T)  # a short sequence is one chunk, not a padded long one
    q, k, v, g = (_to_chunks(x, C) for x in (q, k, v, g))  # (B, H, N, C, D)
    N = q.shape[2]
    b = g.cumsum(-2)  # (B, H, N, C, Dk): log decay from the chunk start, <= 0
    last = b[..., -1:, :]  # (B, H, N, 1, Dk): the whole chunk's log decay

    # Across chunks every exponent is <= 0: what each chunk writes, decayed
    # to its end; how much of the state survives it; the state's read.
    write = (k * (last - b).exp()).transpose(-1, -2) @ v  # (B, H, N, Dk, Dv)
    keep = last.transpose(-1, -2).exp()  # (B, H, N, Dk, 1)
    if S is None:
        S = k.new_zeros(B, H, Dk, Dv)
    starts = []
    # unbind, not indexing in the loop: the backward of N selects would be N
    # zero-filled full-size gradients, quadratic in T.
    for keep_n, write_n in zip(keep.unbind(2), write.unbind(2), strict=True):
        starts.append(S)
        S = keep_n * S + write_n
    start = torch.stack(starts, dim=2)  # (B, H, N, Dk, Dv): the state each chunk begins from

    intra = _intra(*(x.reshape(B * H * N, C, -1) for x in (q, k, v, g, b)))  # (B * H * N, C, Dv)
    out = (q * b.exp()) @ start + intra.view(B, H, N, C, Dv)  # (B, H, N, C, Dv)
    out = out.reshape(B, H, N * C, Dv)[:, :, :T]
    return out.transpose(1, 2), S  # (B, T, H, Dv)


def _step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, S: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step, the recurrence as written; inputs (B, 1, H, D), q already scaled."""
    write = k[:, 0, :, :, None] * v[:, 0, :, None, :]  # (B, H, Dk, Dv)
    if S is None:
        S = torch.zeros_like(write)  # not skipped: g then gets its (zero) gradient, as in the twin
    S = g[:, 0].exp()[..., None] * S + write
    return torch.einsum("bhk,bhkv->bhv", q[:, 0], S)[:, None], S  # (B, 1, H, Dv)


def _use_fla(q: torch.Tensor) -> bool:
    """Whether fla's Triton kernel can take this call: CUDA, a dtype Triton handles, fla importable."""
    if not q.is_cuda or q.dtype == torch.float64:
        return False
    try:
        import fla.ops.gla  # noqa: F401  (lazy: pulls in triton)
    except ImportError:
        return False
    return True


def _fla_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float,
    S: torch.Tensor | None,
    want_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fla's ``chunk_gla`` on (B, T, H, D) inputs with log decays g; the same recurrence and scale."""
    from fla.ops.gla import chunk_gla

    extra = {}
    if "head_first" in inspect.signature(chunk_gla).parameters:
        extra["head_first"] = False  # releases with this flag defaulted to (B, H, T, D) for a while
    return chunk_gla(
        q,
        k,
        v,
        g.float(),  # fla cumulates the log decays itself, in float32
        scale=scale,
        initial_state=None if S is None else S.float(),  # fla asserts a float32 state
        output_final_state=want_state,
        **extra,
    )


def _gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    S: torch.Tensor | None,
    chunk_size: int,
    scale: float,
    want_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal GLA on (B, T, H, D) inputs; returns (B, T, H, Dv) and the final S."""
    T = q.shape[1]
    if T > 1 and _use_fla(q):
        return _fla_gla(q, k, v, g, scale, S, want_state)
    # Log decays are summed and exponentiated in at least float32: half
    # precision would lose the small g of slow channels in a long cumsum.
    out_dtype, dtype = v.dtype, torch.promote_types(q.dtype, torch.float32)
    q, k, v, g = (x.to(dtype) for x in (q, k, v, g))
    q = q * scale
    if S is not None:
        S = S.to(dtype)
    if T == 1:
        out, S = _step(q, k, v, g, S)
    elif torch.compiler.is_exporting():
        out, S = _recurrent(q, k, v, g, S)
    else:
        out, S = _chunked(q, k, v, g, S, chunk_size)
    return out.to(out_dtype), S


def _recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, S: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence step by step over (B, T, H, D): what ONNX export traces instead of ``_chunked``.

    The chunked form redoes strongly decaying chunks on a branch that depends
    on the data, which torch.export cannot trace; unrolled over the (fixed)
    length of an encoder's sequence, the steps are plain tensor ops.
    """
    outs = []
    for t in range(q.shape[1]):
        o, S = _step(q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], g[:, t : t + 1], S)
        outs.append(o)
    assert S is not None
    return torch.cat(outs, dim=1), S  # (B, T, H, Dv)


class GLAGates(nn.Module):
    """Per-step, per-key-channel log decays ``g = logsigmoid(W2 W1 x) / 16`` <= 0, as (B, T, H, Dk).

    Low rank (dim -> 16 -> H * Dk) as in GLA: a decay per channel is wanted,
    a full projection for it is not. Dividing by 16 keeps decays near 1 at
    initialisation (exp(-log 2 / 16) ~ 0.96 per step), so the state starts
    out remembering for tens of steps rather than a couple.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, rank: int = 16, normalizer: float = 16.0) -> None:
        super().__init__()
        self.heads, self.head_dim, self.normalizer = heads, head_dim, normalizer
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, heads * head_dim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        B, T, _ = x.shape
        g = F.logsigmoid(self.up(self.down(x))) / self.normalizer  # (B, T, H * Dk)
        return {"g": g.view(B, T, self.heads, self.head_dim)}


class GLAOutput(nn.Module):
    """Per-head RMSNorm of the read-out, times the output gate ``swish(W_r x)``, as in GLA.

    The read-out ``q^T S`` has whatever scale the state has accumulated,
    which depends on how much each channel forgot; the norm puts it on one
    scale and the gate lets the block choose, per channel, what to pass on.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(head_dim))  # shared by the heads, as fla's g_norm
        self.eps = eps
        self.gate = nn.Linear(dim, heads * head_dim, bias=False)  # as fla's g_proj

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = F.rms_norm(y, (y.shape[-1],), self.weight, self.eps)  # (B, T, H, D)
        return y * F.silu(self.gate(x)).view(y.shape)


def _example_g(
    B: int, T: int, H: int, D: int, generator: torch.Generator, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    # Channels from nearly no decay to ~e^-4 per step, so tests see slow
    # and fast forgetting side by side.
    x = 2 * torch.randn(B, T, H, D, generator=generator, dtype=dtype) + 2
    return {"g": F.logsigmoid(x)}


def _example_state(B: int, H: int, D: int, generator: torch.Generator, dtype: torch.dtype) -> State:
    return {"S": torch.randn(B, H, D, D, generator=generator, dtype=dtype)}


@register_kind(
    "gla",
    KindSpec(
        reference=naive_gla,
        options=("chunk_size",),
        extras=GLAGates,
        post=GLAOutput,
        example_inputs=_example_g,
        example_state=_example_state,
        example_options={"chunk_size": 16},
    ),
)
def gla_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    g: torch.Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
) -> tuple[torch.Tensor, State | None]:
    """Gated linear attention on q, k, g (B, T, H, Dk) and v (B, T, H, Dv); g is the log decay, <= 0."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if not causal:
        if state is not None:
            raise ValueError("gla: the bidirectional form has no decoding state")
        # Both directions in one doubled batch: one chunk loop, not two.
        both, _ = _gla(
            *(torch.cat([x, x.flip(1)]) for x in (q, k, v, g)),
            None,
            chunk_size,
            scale,
            want_state=False,
        )
        fwd, bwd = both.unflatten(0, (2, -1)).unbind(0)  # not chunk(2): it pins a symbolic batch in export
        return (fwd + bwd.flip(1)) / 2, None
    out, S = _gla(q, k, v, g, (state or {}).get("S"), chunk_size, scale, want_state=state is not None)
    return out, (None if state is None else {"S": S})
