"""DeltaNet: linear attention whose state is edited by the delta rule.

Schlag et al. 2021; the chunkwise form is Yang et al. 2024, "Parallelizing
Linear Transformers with the Delta Rule over Sequence Length". Keys and
queries are L2-normalised inside the kind, and each step first reads what the
state holds for its key, then replaces it in proportion ``beta`` in (0, 1):

    S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T    S: (Dk, Dv)
    o_t = D^-0.5 q_t^T S_t

Training uses the chunkwise WY/UT form: within a chunk of C steps the
product of the C rank-one updates ``(I - beta_i k_i k_i^T)`` is ``I - K^T W``
with ``W = T K``, ``U = T V`` and ``T = (I + tril(diag(beta) K K^T, -1))^-1
diag(beta)``, found by one unit-lower-triangular solve. W and U do not depend
on the state, so all chunks get them in one batched call; only a
``(Dk, Dk) @ (Dk, Dv)`` product per chunk is left to a Python loop. Decoding
one token is the recurrence itself; ``state`` is ``{"S": (B, H, Dk, Dv)}``.

Bidirectional (for encoders) is the mean of the causal scan and the causal
scan over the time-reversed sequence, run as one doubled batch; it keeps no
state. On CUDA, when flash-linear-attention is installed, the chunkwise form
is fla's ``chunk_delta_rule`` (its own chunk size; ``chunk_size`` is ignored).

Unlike fla's DeltaNet layer there is no short causal convolution (nor SiLU)
on q, k, v before the kind: the block computes them, and no hook of the kind
sees them. The output does get fla's per-head RMSNorm (``post``).

>>> import torch
>>> q = k = v = torch.randn(1, 5, 2, 4, dtype=torch.float64)  # (B, T, H, D)
>>> beta = torch.full((1, 5, 2), 0.5, dtype=torch.float64)  # (B, T, H)
>>> out, state = deltanet_attention(q, k, v, causal=True, state={}, beta=beta, chunk_size=2)
>>> ref, _ = naive_deltanet(q, k, v, causal=True, state={}, beta=beta)
>>> out.shape, state["S"].shape, torch.allclose(out, ref)
(torch.Size([1, 5, 2, 4]), torch.Size([1, 2, 4, 4]), True)
"""

from __future__ import annotations

import functools
import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import nn

from glassbox.nn.attention import KindSpec, State, register_kind
from glassbox.nn.kinds.deltanet_naive import EPS, naive_deltanet


def _l2norm(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return x * (torch.rsqrt((x * x).sum(-1, keepdim=True) + EPS) * scale)


def _wy(k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W = T K and U = T V for chunks shaped (..., C, D), beta (..., C, 1); keys already normalised.

    The unit-triangular solve reads only the strict lower part of its matrix,
    so the identity of ``A = I + tril(diag(beta) K K^T, -1)`` is implied.
    """
    C = k.shape[-2]
    kb = k * beta  # (..., C, Dk): diag(beta) K
    strict = torch.ones(C, C, dtype=torch.bool, device=k.device).tril(-1)
    A = (kb @ k.transpose(-1, -2)).masked_fill(~strict, 0.0)  # (..., C, C)
    # W and U share A, so one solve with both right-hand sides.
    wu = torch.linalg.solve_triangular(A, torch.cat([kb, v * beta], -1), upper=False, unitriangular=True)
    return wu.split([k.shape[-1], v.shape[-1]], dim=-1)


def _chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    S: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise delta rule on normalised, scaled inputs (B, H, T, D), beta (B, H, T)."""
    B, H, T, Dk = k.shape
    Dv = v.shape[-1]
    C = min(chunk_size, T)  # a short sequence is one chunk, not a padded long one
    N = math.ceil(T / C)
    pad = N * C - T
    if pad:
        # Zero keys with zero beta write nothing and the padded queries are
        # dropped, so a ragged last chunk costs no special case.
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        beta = F.pad(beta, (0, pad))
    q, k, v = (x.reshape(B, H, N, C, -1) for x in (q, k, v))  # (B, H, N, C, D)
    w, u = _wy(k, v, beta.reshape(B, H, N, C, 1))  # (B, H, N, C, Dk), (B, H, N, C, Dv)

    kt = k.transpose(-1, -2)  # (B, H, N, Dk, C)
    # Across a chunk S_next = S + K^T (U - W S) = (I - K^T W) S + K^T U, so the
    # loop needs one matmul-add per chunk.
    decay = torch.eye(Dk, dtype=k.dtype, device=k.device) - kt @ w  # (B, H, N, Dk, Dk)
    write = kt @ u  # (B, H, N, Dk, Dv)
    if S is None:
        S = k.new_zeros(B, H, Dk, Dv)
    starts = []
    # unbind, not write[:, :, n]: each indexing op's backward would allocate
    # a gradient of the whole stack, making the loop quadratic in T.
    for step, add in zip(decay.unbind(2), write.unbind(2), strict=True):
        starts.append(S)
        S = torch.baddbmm(add.flatten(0, 1), step.flatten(0, 1), S.flatten(0, 1)).view_as(add)
    start = torch.stack(starts, dim=2)  # (B, H, N, Dk, Dv): the state each chunk begins from

    u = u - w @ start  # (B, H, N, C, Dv): what each step actually writes, given the start
    scores = (q @ kt).tril()  # (B, H, N, C, C), inclusive: o_t sees S_t
    out = q @ start + scores @ u  # (B, H, N, C, Dv)
    return out.reshape(B, H, N * C, Dv)[:, :, :T], S


def _step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, S: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step, the recurrence as written; inputs (B, H, 1, D), beta (B, H, 1)."""
    read = k @ S  # (B, H, 1, Dv): k^T S, what the state now holds for this key
    S = S + k.transpose(-1, -2) @ (beta[..., None] * (v - read))  # (B, H, Dk, Dv)
    return q @ S, S


@functools.cache
def _fla_installed() -> bool:
    # find_spec, not import: importing fla pulls in triton, which has no
    # business being loaded on a CPU-only run.
    return importlib.util.find_spec("fla") is not None


def _use_fla(q: torch.Tensor) -> bool:
    return q.is_cuda and _fla_installed()


def _fla_delta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    S: torch.Tensor | None,
    want_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fla's chunkwise kernel on raw q, k (B, T, H, D); it normalises them itself, with the same eps."""
    from fla.ops.delta_rule import chunk_delta_rule

    return chunk_delta_rule(
        q,
        k,
        v,
        beta.to(q.dtype),
        scale=q.shape[-1] ** -0.5,
        initial_state=S,
        output_final_state=want_state,
        use_qk_l2norm_in_kernel=True,
    )


def _delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    S: torch.Tensor | None,
    chunk_size: int,
    want_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal delta rule on (B, T, H, D) inputs, beta (B, T, H); returns (B, T, H, Dv) and the final S."""
    T = q.shape[1]
    if T > 1 and _use_fla(q):
        return _fla_delta(q, k, v, beta, S, want_state)
    # The solve has no half-precision CPU kernel, and a running state wants
    # float32 anyway.
    dtype, out_dtype = torch.promote_types(q.dtype, torch.float32), v.dtype
    # One contiguous copy up front; strided views would be copied again by
    # every batched matmul that reads them.
    q, k, v = (x.transpose(1, 2).to(dtype, memory_format=torch.contiguous_format) for x in (q, k, v))
    q = _l2norm(q, q.shape[-1] ** -0.5)  # (B, H, T, Dk)
    k = _l2norm(k)
    beta = beta.transpose(1, 2).to(dtype)  # (B, H, T)
    if S is not None:
        S = S.to(dtype)
    if T == 1 and S is not None:
        out, S = _step(q, k, v, beta, S)
    elif torch.compiler.is_exporting():
        # ONNX has no triangular solve (the chunked WY form needs one): export
        # traces the recurrence step by step over the encoder's fixed length.
        if S is None:
            S = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1])  # (B, H, Dk, Dv)
        outs = []
        for t in range(T):
            o, S = _step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], beta[:, :, t : t + 1], S)
            outs.append(o)
        out = torch.cat(outs, dim=2)  # (B, H, T, Dv)
    else:
        out, S = _chunked(q, k, v, beta, S, chunk_size)
    return out.transpose(1, 2).to(out_dtype), S  # (B, T, H, Dv)


class BetaProjection(nn.Module):
    """Per-step, per-head write strength ``beta = sigmoid(W x)`` in (0, 1), shaped (B, T, H).

    A sigmoid rather than a free scale: in (0, 1) each update ``I - beta k k^T``
    moves the stored value toward the new one without overshooting, while a
    beta outside (0, 2) makes the update expand the state without bound.
    """

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"beta": torch.sigmoid(self.proj(x))}  # (B, T, H)


class HeadRMSNorm(nn.Module):
    """RMSNorm over each head's output, one weight shared by the heads (as fla's DeltaNet layer).

    A read-out ``q^T S`` has whatever scale the state has accumulated, which
    varies with position and content; normalising it keeps the residual
    updates of the block on one scale.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(head_dim))
        self.eps = eps

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(y, (y.shape[-1],), self.weight, self.eps)  # (B, T, H, D)


def _example_beta(
    B: int, T: int, H: int, D: int, generator: torch.Generator, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    return {"beta": torch.sigmoid(torch.randn(B, T, H, generator=generator, dtype=dtype))}


def _example_state(B: int, H: int, D: int, generator: torch.Generator, dtype: torch.dtype) -> State:
    return {"S": torch.randn(B, H, D, D, generator=generator, dtype=dtype)}


@register_kind(
    "deltanet",
    KindSpec(
        reference=naive_deltanet,
        options=("chunk_size",),
        extras=BetaProjection,
        post=HeadRMSNorm,
        example_inputs=_example_beta,
        example_state=_example_state,
        example_options={"chunk_size": 16},
    ),
)
def deltanet_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    beta: torch.Tensor,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, State | None]:
    """Delta-rule attention on (B, T, H, D) inputs with write strengths ``beta`` (B, T, H)."""
    if not causal:
        if state is not None:
            raise ValueError("deltanet: the bidirectional form has no decoding state")
        # Both directions in one doubled batch: one solve and one chunk loop.
        both, _ = _delta_rule(
            torch.cat([q, q.flip(1)]),
            torch.cat([k, k.flip(1)]),
            torch.cat([v, v.flip(1)]),
            torch.cat([beta, beta.flip(1)]),
            None,
            chunk_size,
            want_state=False,
        )
        fwd, bwd = both.unflatten(0, (2, -1)).unbind(0)  # not chunk(2): it pins a symbolic batch in export
        return (fwd + bwd.flip(1)) / 2, None
    out, S = _delta_rule(q, k, v, beta, (state or {}).get("S"), chunk_size, want_state=state is not None)
    return out, (None if state is None else {"S": S})
