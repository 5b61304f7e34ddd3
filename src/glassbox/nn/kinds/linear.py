"""The ``linear`` kind: normalized kernelized linear attention (Katharopoulos et al. 2020).

``out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + EPS)`` with ``S_i = sum_j phi(k_j) v_j^T``
and ``z_i = sum_j phi(k_j)`` over ``j <= i`` (causal) or all ``j``. The feature
map ``phi`` is ``elu(x) + 1`` or Based's 2nd-order Taylor expansion of
``exp(q.k / sqrt(d))`` (Arora et al. 2024). Three forms, one result:

- causal, T > 1: chunks of ``chunk_size``; inside a chunk a masked ``(C, C)``
  score matmul, across chunks the running state. Any ``T``: the last chunk
  is zero-padded, values *and* the ``z`` column, so padded keys add nothing.
- bidirectional: the global ``S`` and ``z``, two matmuls, O(T).
- decoding: ``state={"S": (B, H, F, Dv), "z": (B, H, F)}`` (``{}`` at the first
  call) seeds the chunk form; a single token is one recurrent step.

``z`` rides along as one extra value column (``v' = [v, 1]``, so
``S' = [S, z]``): numerator and denominator come out of the same matmuls.
On CUDA, with flash-linear-attention installed, the causal form runs fla's
chunk kernel for the numerator; the normalization stays here.

>>> import torch
>>> q = k = v = torch.randn(1, 70, 2, 8)  # (B, T, H, D)
>>> full, _ = linear_attention(q, k, v, causal=True, state=None, chunk_size=16)
>>> head, state = linear_attention(q[:, :69], k[:, :69], v[:, :69], causal=True, state={})
>>> last, state = linear_attention(q[:, 69:], k[:, 69:], v[:, 69:], causal=True, state=state)
>>> state["S"].shape, torch.allclose(last, full[:, 69:], atol=1e-5)
(torch.Size([1, 2, 8, 8]), True)
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch
import torch.nn.functional as F

from glassbox.errors import UserError, did_you_mean
from glassbox.nn.attention import KindSpec, State, register_kind
from glassbox.nn.kinds.linear_naive import naive_linear_attention

# Same as the twin's: keeps 0/0 away without moving real outputs, since every
# denominator sums one positive term (elu + 1 > 0) or one term >= 1/2
# (taylor: 1 + s + s^2/2 >= 1/2) per key seen.
EPS = 1e-6
FEATURE_MAPS = ("elu", "taylor")
# fla's chunk kernels assert a key (here: feature) dimension of at most 256.
_FLA_MAX_FEATURES = 256


def feature_dim(head_dim: int, feature_map: str) -> int:
    """``F``, the length of ``phi(x)`` for ``x`` of length ``head_dim``."""
    return head_dim if feature_map == "elu" else 1 + head_dim + head_dim * (head_dim + 1) // 2


def feature_map_fn(x: torch.Tensor, feature_map: str) -> torch.Tensor:
    """``phi(x)`` for ``x`` (..., D) -> (..., F).

    Taylor keeps each unordered pair ``i <= j`` of ``vec(x x^T)`` once, the
    off-diagonal ones weighted by sqrt(2) to stand for both orders: half the
    features of the full outer product, the same dot products
    ``phi(q) . phi(k) = 1 + s + s^2 / 2`` for ``s = q.k / sqrt(d)``.
    """
    if feature_map == "elu":
        return F.elu(x) + 1
    if feature_map != "taylor":
        raise UserError(f"unknown feature_map '{feature_map}': {did_you_mean(feature_map, FEATURE_MAPS)}")
    d = x.shape[-1]
    i, j = torch.triu_indices(d, d, device=x.device)  # row-major i <= j, as in the twin
    c = torch.full(i.shape, 1 / math.sqrt(d), dtype=x.dtype, device=x.device)  # (P,)
    c[i == j] = 1 / math.sqrt(2 * d)
    # Two gathers of length P rather than the (D, D) outer product: the
    # transient stays (..., P), not (..., D, D).
    quad = x[..., i] * x[..., j] * c  # (..., P)
    return torch.cat([torch.ones_like(x[..., :1]), x / d**0.25, quad], -1)


def _example_state(B: int, H: int, D: int, generator: torch.Generator, dtype: torch.dtype) -> State:
    # What three earlier tokens leave behind with the default (elu)
    # feature map, so z is positive as every reachable z is.
    k, v = (torch.randn(B, 3, H, D, generator=generator, dtype=dtype) for _ in range(2))
    kf = F.elu(k) + 1  # (B, 3, H, F)
    return {"S": torch.einsum("bthf,bthd->bhfd", kf, v), "z": kf.sum(1)}


# --- GPU: flash-linear-attention, when present -------------------------------


def _use_fla(q: torch.Tensor) -> bool:
    """Whether fla's Triton kernels can take this call: on CUDA, with fla importable."""
    if not q.is_cuda:
        return False
    try:
        import fla.ops.linear_attn  # noqa: F401  (lazy: pulls in triton)
    except ImportError:
        return False
    return True


def _fla_applies(q: torch.Tensor, causal: bool, feature_map: str) -> bool:
    """Causal chunk work in a dtype and feature size fla's kernels take, on a machine that has fla."""
    _, T, H, D = q.shape
    # Some fla releases take T < H for a head-first layout and refuse; a
    # single token is one cheap recurrent step here anyway.
    return (
        causal
        and T > 1
        and T >= H
        and feature_dim(D, feature_map) <= _FLA_MAX_FEATURES
        and q.dtype in (torch.float16, torch.bfloat16, torch.float32)
        and _use_fla(q)
    )


def _fla_linear(
    qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor, S0: torch.Tensor | None, z0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal linear attention on fla's chunk kernel: out (B, T, H, Dv), S (B, H, F, Dv), z (B, H, F).

    ``qf, kf`` are already feature-mapped (B, T, H, F). fla is asked for the
    bare numerator ``phi(q_i)^T S_i`` (no scale, no normalization: its own
    divides by ``q . cumsum(k)`` with another epsilon and, in some releases,
    without the start state's ``z``); the denominator is computed here.
    """
    from fla.ops.linear_attn import chunk_linear_attn

    S0 = None if S0 is None else S0.float()  # fla keeps its state in float32
    num, S = chunk_linear_attn(
        qf.contiguous(),
        kf.contiguous(),
        v.contiguous(),
        scale=1.0,
        initial_state=S0,
        output_final_state=True,
        normalize=False,
    )  # (B, T, H, Dv), (B, H, F, Dv) in float32
    zc = kf.float().cumsum(1)  # (B, T, H, F)
    if z0 is not None:
        zc = zc + z0[:, None].float()
    den = (qf.float() * zc).sum(-1, keepdim=True) + EPS  # (B, T, H, 1)
    return (num.float() / den).to(v.dtype), S, zc[:, -1]


# --- CPU and fallback: the chunk form ----------------------------------------


def _regions(B: int, H: int, T: int, C: int, *tensors: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Matching views of flat (B, T, H, X) and chunk-major (N * B * H, C, X) tensors.

    Chunk-major puts chunk ``n`` of every (batch, head) in one contiguous
    slab, so the running state can be summed in place and fed to ``bmm``
    without copies. Elementwise ops write straight across the two layouts
    through these views, (B, n, C, H, X) for the full chunks and then
    (B, r, H, X) for a ragged tail, so no op needs a transposing copy of its own.
    """
    N, full = -(-T // C), T // C
    mains, tails = [], []
    for x in tensors:
        if x.dim() == 4:
            mains.append(x[:, : full * C].unflatten(1, (full, C)))
            tails.append(x[:, full * C :])
        else:
            ch = x.view(N, B, H, C, -1).permute(1, 0, 3, 2, 4)  # (B, N, C, H, X)
            mains.append(ch[:, :full])
            tails.append(ch[:, -1, : T - full * C])
    return [tuple(mains), tuple(tails)] if full < N else [tuple(mains)]


def _pad_rows(chunked: torch.Tensor, B: int, T: int, H: int) -> torch.Tensor:
    """The rows of ``chunked`` (N * B * H, C, X) past ``T`` (the last chunk's tail), as a view."""
    G, C = chunked.shape[:2]
    N = G // (B * H)
    return chunked.view(N, B, H, C, -1)[-1, :, :, T - (N - 1) * C :]


def _phi_into(x: torch.Tensor, dst: torch.Tensor, feature_map: str) -> None:
    """Write ``phi(x)`` for x (B, T, H, D) into ``dst`` (N * B * H, C, F); padded rows get phi(0)."""
    B, T, H, _ = x.shape
    C = dst.shape[1]
    _pad_rows(dst, B, T, H).zero_()
    if feature_map == "elu":
        for src, out in _regions(B, H, T, C, x, dst):
            torch.ops.aten.elu.out(src, 1.0, 1, 1, out=out)  # elu straight into the chunk layout
        dst.add_(1)
        return
    for src, out in _regions(B, H, T, C, feature_map_fn(x, feature_map), dst):
        out.copy_(src)


def _phi_backward_into(
    dphi: torch.Tensor, phi: torch.Tensor, x: torch.Tensor, dx: torch.Tensor, feature_map: str
) -> None:
    """Write d loss / d x into ``dx`` (B, T, H, D) from d loss / d phi(x) (N * B * H, C, F).

    ``phi`` is phi(x) in the chunk layout (elu's branch reads it, the others
    recompute phi from ``x``).
    """
    B, T, H, _ = x.shape
    C = dphi.shape[1]
    if feature_map == "elu":
        # d(elu(x) + 1)/dx is 1 where phi = x + 1 > 1 and exp(x) = phi where
        # phi <= 1: min(phi, 1), from the features already in cache instead
        # of another exp over x.
        slope = torch.clamp(phi, max=1, out=_scratch("slope", phi.shape, phi))
        for out, g, d in _regions(B, H, T, C, dx, dphi, slope):
            torch.mul(g, d, out=out)
        return
    # Other maps: back through a recomputed phi(x) with autograd.
    dflat = x.new_empty(B, T, H, dphi.shape[-1])
    for out, src in _regions(B, H, T, C, dflat, dphi):
        out.copy_(src)
    with torch.enable_grad():
        xg = x.detach().requires_grad_()
        dx.copy_(torch.autograd.grad(feature_map_fn(xg, feature_map), xg, dflat)[0])


# Rows (tokens x batch x heads) the chunk form works on at a time: about
# 1 MiB per 64-wide float32 tensor, so one block's intermediates stay in a
# core's L2. Measured (B=1, H=4, D=64, 1 thread, forward + backward at 16k
# tokens): 165 ms in blocks of 4096 rows, 207 ms in one sequence-long pass.
_BLOCK_ROWS = 4096


# Scratch buffers of the chunk form, kept from call to call (per thread, CPU
# only): a block's intermediates are used within one forward or one backward
# and never saved or returned. Fresh allocations of this size come back from
# the OS as untouched pages, and their page faults measured ~15% of the
# forward + backward at 4k tokens.
_SCRATCH = threading.local()
_SCRATCH_MAX_BYTES = 8 * 2**20  # per buffer; about ten of them


def _scratch(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialized ``shape`` buffer like ``like``, reused across calls when small enough."""
    numel = math.prod(shape)
    bufs: dict[str, torch.Tensor] = _SCRATCH.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
        buf = like.new_empty(numel)
        if like.device.type == "cpu" and numel * buf.element_size() <= _SCRATCH_MAX_BYTES:
            bufs[name] = buf
    return buf[:numel].view(shape)


class _Blocks:
    """The chunk-major inputs of one block of chunks at a time, for the forward and the backward.

    Chunk-major: chunk n of every (batch, head) is one contiguous slab, so
    the running state is summed in place and every matmul is one ``bmm``.
    The features phi(q), phi(k) of the whole sequence are kept in ``q3, k3``
    (N * B * H, C, F): the forward fills them, the backward reads them,
    since elu's ``expm1`` costs more than the memory traffic. Values and
    scores are rebuilt per block (a copy and one ``bmm``) rather than kept.
    """

    def __init__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        C: int,
        feature_map: str,
        features: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        B, T, H, D = q.shape
        self.q, self.k, self.v, self.C, self.feature_map = q, k, v, C, feature_map
        self.N, self.BH = -(-T // C), B * H
        self.per = max(1, _BLOCK_ROWS // (self.BH * C))  # chunks per block
        rows = min(self.per, self.N) * self.BH
        Fd, Dv = feature_dim(D, feature_map), v.shape[-1]
        self.fill = features is None
        if features is None:
            features = q.new_empty(self.N * self.BH, C, Fd), k.new_empty(self.N * self.BH, C, Fd)
        self.q3, self.k3 = features
        self.vb = _scratch("vb", (rows, C, Dv + 1), v)  # [v, 1]: the 1s make z
        self.sb = _scratch("sb", (rows, C, C), q)

    def spans(self) -> list[tuple[int, int, int, int]]:
        """``(first chunk, end chunk, first token, end token)`` of each block."""
        N, per, C, T = self.N, self.per, self.C, self.q.shape[1]
        return [(n0, min(n0 + per, N), n0 * C, min((n0 + per) * C, T)) for n0 in range(0, N, per)]

    def load(self, n0: int, n1: int, t0: int, t1: int) -> tuple[torch.Tensor, ...]:
        """phi(q), phi(k), [v, 1] (rows, C, .) and the masked scores (rows, C, C) of one block."""
        B, _, H, Dv = self.v.shape
        rows, C, BH = (n1 - n0) * self.BH, self.C, self.BH
        qb, kb = self.q3[n0 * BH : n1 * BH], self.k3[n0 * BH : n1 * BH]
        vb, sb = self.vb[:rows], self.sb[:rows]
        if self.fill:
            _phi_into(self.q[:, t0:t1], qb, self.feature_map)
            _phi_into(self.k[:, t0:t1], kb, self.feature_map)
        vb[..., Dv] = 1
        _pad_rows(vb, B, t1 - t0, H).zero_()  # padded keys: no value, no 1, so no say
        for src, dst in _regions(B, H, t1 - t0, C, self.v[:, t0:t1], vb):
            dst[..., :Dv].copy_(src)
        torch.bmm(qb, kb.transpose(1, 2), out=sb).tril_()
        return qb, kb, vb, sb


class _CausalChunked(torch.autograd.Function):
    """Causal chunk form with a hand-written backward.

    Autograd's version of the same ops spends about as long on bookkeeping
    as on matmuls: gradient accumulation adds, ``cumsum`` over a non-last
    dim (tens of ms at 16k tokens), copies behind ``cat``, slicing and
    transposes. Here every ``A @ B + C @ D`` is a ``bmm`` and an in-place
    ``baddbmm_``, the running state is summed in place slab by slab, layout
    changes ride on elementwise ops that are needed anyway, and the work
    goes block by block (forward from the start, backward from the end) so
    each block's intermediates are still in cache when they are used.
    """

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        S0: torch.Tensor | None,
        z0: torch.Tensor | None,
        C: int,
        feature_map: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, H, D = q.shape
        Dv, Fd = v.shape[-1], feature_dim(D, feature_map)
        blocks = _Blocks(q, k, v, C, feature_map)
        N, BH = blocks.N, blocks.BH
        den = v.new_empty(N, BH, C, 1)
        out = v.new_empty(B, T, H, Dv)
        # states[n] = [S, z] before chunk n; states[N] is the final one.
        states = v.new_empty(N + 1, BH, Fd, Dv + 1)
        if S0 is None:
            states[0].zero_()
        else:
            states[0, ..., :Dv] = S0.reshape(BH, Fd, Dv)
            states[0, ..., Dv] = z0.reshape(BH, Fd)
        for n0, n1, t0, t1 in blocks.spans():
            qb, kb, vb, sb = blocks.load(n0, n1, t0, t1)
            torch.bmm(kb.transpose(1, 2), vb, out=states[n0 + 1 : n1 + 1].view(-1, Fd, Dv + 1))
            for n in range(n0 + 1, n1 + 1):  # in place: torch.cumsum over dim 0 is ~15x slower
                states[n].add_(states[n - 1])
            num = _scratch("num", (qb.shape[0], C, Dv + 1), v)  # [numerator, denominator]
            torch.bmm(qb, states[n0:n1].view(-1, Fd, Dv + 1), out=num).baddbmm_(sb, vb)
            db = torch.add(num[..., Dv:], EPS, out=den[n0:n1].view(-1, C, 1))
            for dst, nb, d in _regions(B, H, t1 - t0, C, out[:, t0:t1], num, db):
                torch.div(nb[..., :Dv], d, out=dst)
        ctx.save_for_backward(q, k, v, S0, z0, blocks.q3, blocks.k3, states, den, out)
        ctx.C, ctx.feature_map = C, feature_map
        ctx.set_materialize_grads(False)  # unused outputs (the state, in training) come back as None
        final = states[N].view(B, H, Fd, Dv + 1)
        return out, final[..., :Dv].clone(), final[..., Dv].clone()

    @staticmethod
    def backward(
        ctx: Any, dout: torch.Tensor | None, dS: torch.Tensor | None, dz: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, v, S0, z0, q3, k3, states, den, out = ctx.saved_tensors
        C, fm = ctx.C, ctx.feature_map
        if torch.is_grad_enabled():
            # create_graph=True: the steps below record no graph of their own,
            # so differentiate a replay in plain differentiable ops instead.
            return _replay_backward(C, fm, (q, k, v, S0, z0), (dout, dS, dz))
        B, _, H, _ = q.shape
        _, BH, Fd, Dv1 = states.shape
        Dv = Dv1 - 1
        blocks = _Blocks(q, k, v, C, fm, features=(q3, k3))
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        # What the state after the current block fed: the final state's
        # gradient at first, then carried back block by block.
        carry = v.new_zeros(BH, Fd, Dv1)
        if dS is not None:
            carry[..., :Dv] = dS.reshape(BH, Fd, Dv)
        if dz is not None:
            carry[..., Dv] = dz.reshape(BH, Fd)
        for n0, n1, t0, t1 in reversed(blocks.spans()):
            flat = (B, H, t1 - t0, C)
            qb, kb, vb, sb = blocks.load(n0, n1, t0, t1)
            # Through out = num / den: dnum = [dout / den, -(dout . out) / den].
            rows = qb.shape[0]
            dnum = _scratch("dnum", (rows, C, Dv1), v)
            _pad_rows(dnum, B, t1 - t0, H).zero_()
            if dout is None:
                dnum.zero_()
            else:
                prod = torch.mul(dout[:, t0:t1], out[:, t0:t1], out=_scratch("prod", (B, t1 - t0, H, Dv), v))
                ndot = prod.sum(-1, keepdim=True).neg_()  # (B, t, H, 1)
                db = den[n0:n1].view(-1, C, 1)
                for g, nd, dn, d in _regions(*flat, dout[:, t0:t1], ndot, dnum, db):
                    torch.div(g, d, out=dn[..., :Dv])
                    torch.div(nd, d, out=dn[..., Dv:])
            dsb = torch.bmm(dnum, vb.transpose(1, 2), out=_scratch("dsb", (rows, C, C), v)).tril_()
            before = states[n0:n1].view(-1, Fd, Dv1)
            dqb = torch.bmm(dnum, before.transpose(1, 2), out=_scratch("dqb", (rows, C, Fd), v))
            dqb.baddbmm_(dsb, kb)
            # dstates[i] first holds what chunk n0 + i read from its state;
            # summed from the back it becomes all that state fed, later
            # chunks and blocks included.
            dstates = _scratch("dstates", (n1 - n0 + 1, BH, Fd, Dv1), v)
            dstates[-1] = carry
            torch.bmm(qb.transpose(1, 2), dnum, out=dstates[:-1].view(-1, Fd, Dv1))
            for i in range(n1 - n0 - 1, -1, -1):
                dstates[i].add_(dstates[i + 1])
            carry = dstates[0].clone()  # dstates is scratch, reused by the next block
            dkv = dstates[1:].view(-1, Fd, Dv1)  # chunk i's own sum fed states i+1 onwards
            dkb = torch.bmm(dsb.transpose(1, 2), qb, out=_scratch("dkb", (rows, C, Fd), v))
            dkb.baddbmm_(vb, dkv.transpose(1, 2))
            dvb = torch.bmm(sb.transpose(1, 2), dnum, out=_scratch("dvb", (rows, C, Dv1), v))
            dvb.baddbmm_(kb, dkv)
            _phi_backward_into(dqb, qb, q[:, t0:t1], dq[:, t0:t1], fm)
            _phi_backward_into(dkb, kb, k[:, t0:t1], dk[:, t0:t1], fm)
            for dst, src in _regions(*flat, dv[:, t0:t1], dvb):
                dst.copy_(src[..., :Dv])
        dS0 = dz0 = None
        if S0 is not None:
            d0 = carry.view(B, H, Fd, Dv1)
            dS0, dz0 = d0[..., :Dv], d0[..., Dv]
        return dq, dk, dv, dS0, dz0, None, None


def _causal_autograd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    S0: torch.Tensor | None,
    z0: torch.Tensor | None,
    C: int,
    feature_map: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``_CausalChunked`` computes, in plain differentiable ops.

    Slower, but its graph can be differentiated again: ``_CausalChunked``
    replays it when a backward is itself being recorded (``create_graph=True``).
    """
    T, Dv = q.shape[1], v.shape[-1]
    N = -(-T // C)
    qf, kf = feature_map_fn(q, feature_map), feature_map_fn(k, feature_map)  # (B, T, H, F)
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], -1)  # (B, T, H, Dv + 1): [v, 1]
    pad = (0, 0, 0, 0, 0, N * C - T)
    qc, kc, vc = (F.pad(x, pad).unflatten(1, (N, C)).transpose(2, 3) for x in (qf, kf, v1))  # (B, N, H, C, .)
    kv = kc.transpose(-1, -2) @ vc  # (B, N, H, F, Dv + 1): each chunk's own sum
    first = torch.zeros_like(kv[:, :1])
    if S0 is not None:
        first = first + torch.cat([S0, z0[..., None]], -1)[:, None]
    before = torch.cat([first, kv[:, :-1]], 1).cumsum(1)  # state before each chunk
    num = qc @ before + (qc @ kc.transpose(-1, -2)).tril() @ vc  # (B, N, H, C, Dv + 1)
    num = num.transpose(2, 3).flatten(1, 2)[:, :T]  # (B, T, H, Dv + 1)
    final = before[:, -1] + kv[:, -1]  # (B, H, F, Dv + 1)
    return num[..., :Dv] / (num[..., Dv:] + EPS), final[..., :Dv], final[..., Dv]


def _replay_backward(
    C: int, feature_map: str, inputs: tuple, grads: tuple
) -> tuple[torch.Tensor | None, ...]:
    wrt = [x for x in inputs if x is not None and x.requires_grad]
    outs = _causal_autograd(*inputs, C, feature_map)
    pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if g is not None]
    got = iter(
        torch.autograd.grad(
            [o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True, allow_unused=True
        )
    )
    return (*(next(got) if x is not None and x.requires_grad else None for x in inputs), None, None)


@register_kind(
    "linear",
    KindSpec(
        reference=naive_linear_attention,
        options=("chunk_size", "feature_map"),
        example_state=_example_state,
        # Small chunks so the 63..300-token contract tests cross many chunk
        # boundaries and end on ragged tails.
        example_options={"chunk_size": 16},
    ),
)
def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    chunk_size: int = 64,
    feature_map: str = "elu",
) -> tuple[torch.Tensor, State | None]:
    """Normalized linear attention on ``(B, T, H, D)``; see the module docstring.

    Computes in the input dtype, float32 at least, and keeps the state so
    (a bf16 running sum would round away late tokens). Bidirectional with a
    state: every new query sees the summarized keys and all new ones.
    """
    if feature_map not in FEATURE_MAPS:
        raise UserError(f"unknown feature_map '{feature_map}': {did_you_mean(feature_map, FEATURE_MAPS)}")
    T = q.shape[1]
    S0 = z0 = None
    if state:
        S0, z0 = state["S"], state["z"]  # (B, H, F, Dv), (B, H, F)

    if _fla_applies(q, causal, feature_map):
        qf, kf = feature_map_fn(q, feature_map), feature_map_fn(k, feature_map)  # (B, T, H, F)
        out, S, z = _fla_linear(qf, kf, v, S0, z0)
        return out, ({"S": S, "z": z} if state is not None else None)

    in_dtype, dtype = v.dtype, torch.promote_types(q.dtype, torch.float32)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if causal and T > 1:
        out, S, z = _CausalChunked.apply(q, k, v, S0, z0, max(1, min(chunk_size, T)), feature_map)
    else:
        # Global sums; for one causal token (a decoding step) the same thing:
        # add its outer product to the state, read the state back.
        qf, kf = feature_map_fn(q, feature_map), feature_map_fn(k, feature_map)  # (B, T, H, F)
        S = torch.einsum("bthf,bthd->bhfd", kf, v)  # (B, H, F, Dv)
        z = kf.sum(1)  # (B, H, F)
        if S0 is not None:
            S, z = S + S0, z + z0
        num = torch.einsum("bthf,bhfd->bthd", qf, S)  # (B, T, H, Dv)
        out = num / (torch.einsum("bthf,bhf->bth", qf, z)[..., None] + EPS)
    return out.to(in_dtype), ({"S": S, "z": z} if state is not None else None)
