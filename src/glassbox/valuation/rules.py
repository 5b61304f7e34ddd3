"""Per-example gradients of one layer type, read off its input and its output gradient.

In-run valuation needs, for every training example i of a batch, the dot
product of its own gradient g_i with a vector (the validation gradient, or
that vector preconditioned the way the optimizer will step). Autograd only
gives the sum over the batch. But for most layers g_i is a simple function
of what the layer saw and what came back: for a linear layer
``y = a W^T + c`` it is ``sum_t b_t a_t^T`` with ``a`` the input and ``b``
the gradient of the loss with respect to ``y`` at position t. So one
forward (capturing inputs) and one backward (to the layers' outputs) give
every example's gradient, implicitly.

A ``Rule`` owns one layer type's *direct* parameters (``recurse=False``)
and answers three questions about a captured call, over a slice of the
batch's rows:

- ``grads``: the gradient summed over those rows (the validation rows'
  share of the shared backward, which in-run valuation takes out of ``.grad``);
- ``dot``: each row's ``<g_i, V>`` for a given V shaped like the parameters;
- ``ghost`` (optional): each row's ``sum_v <g_i, g_v>`` over other rows v,
  without forming any gradient: for a linear layer
  ``<g_i, g_v> = sum_{t,s} (a_it . a_vs)(b_it . b_vs)``, the sum of the
  elementwise product of two Gram matrices ("ghost dot products").

``RULES`` maps a module class to its rule (exact class, not subclasses: a
subclass may compute something else in ``forward``). Every registered rule
has an ``example`` that the contract test (tests/valuation/test_rules.py)
checks against per-example gradients from ``torch.func``, so a new layer
type is tested by being registered.

>>> import torch
>>> from torch import nn
>>> layer = nn.Linear(3, 2)
>>> a, b = torch.randn(4, 5, 3), torch.randn(4, 5, 2)  # (B, T, d_in), (B, T, d_out)
>>> call = Call(layer, (a,), b)
>>> rule = RULES[nn.Linear]
>>> g = rule.grads(call, slice(0, 4))
>>> torch.allclose(g["weight"], torch.einsum("bto,bti->oi", b, a))
True
>>> rule.dot(call, slice(0, 4), g).shape
torch.Size([4])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Grads = dict[str, torch.Tensor]


@dataclass
class Call:
    """One forward call of a layer: its inputs (detached) and the gradient at its output."""

    module: nn.Module
    inputs: tuple[Any, ...]
    grad: torch.Tensor  # dLoss/d(output), same shape as the output, (B, ...)
    cache: dict[str, Any] = field(default_factory=dict)  # what a rule derives once per call


class Rule:
    """Per-example gradients of one layer type. Subclasses set ``per_example`` or override all three."""

    def check(self, module: nn.Module) -> str | None:
        """Why this module cannot be valued (None: it can)."""
        return None

    def capture(self, module: nn.Module, output: torch.Tensor) -> dict[str, Any]:
        """What to keep from the forward besides the inputs (becomes ``Call.cache``); default nothing."""
        return {}

    def per_example(self, call: Call, rows: slice) -> Grads:
        """Each row's gradient, ``(n, *param.shape)`` per parameter name: for small parameters."""
        raise NotImplementedError

    def _per_example(self, call: Call, rows: slice) -> Grads:
        key = ("per_example", rows.start, rows.stop)  # grads and dot of the same rows share it
        if key not in call.cache:
            call.cache[key] = self.per_example(call, rows)
        return call.cache[key]

    def grads(self, call: Call, rows: slice) -> Grads:
        return {k: g.sum(0) for k, g in self._per_example(call, rows).items()}

    def dot(self, call: Call, rows: slice, V: Grads) -> torch.Tensor:
        total = None
        for k, g in self._per_example(call, rows).items():
            if k in V:
                d = g.flatten(1) @ V[k].reshape(-1).to(g.dtype)  # (n,)
                total = d if total is None else total + d
        assert total is not None
        return total

    def ghost(self, call: Call, rows: slice, vrows: slice) -> Grads:
        """Each row's ``sum_v <g_i, g_v>`` over ``vrows``, per parameter, without forming gradients."""
        raise NotImplementedError(f"{type(self).__name__} has no ghost form")

    def ghost_pays(self, call: Call, rows: slice, vrows: slice) -> bool:
        """Whether the ghost form is cheaper than materializing here; False for rules without one."""
        return False

    def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
        """A small module and a function making its inputs ``(B, ...)``: for the contract test."""
        raise NotImplementedError


RULES: dict[type[nn.Module], Rule] = {}


def register_rule(*classes: type[nn.Module]) -> Callable[[type[Rule]], type[Rule]]:
    def deco(cls: type[Rule]) -> type[Rule]:
        for c in classes:
            RULES[c] = cls()
        return cls

    return deco


# -- linear-like layers: per-example gradient sum_t b_t a_t^T -------------------------------
def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, ..., d) -> (B, T, d), T = 1 for a plain (B, d) input."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


class _Outer(Rule):
    """Layers whose weight gradient is ``sum_t b_t a_t^T``: Linear, and convolutions after unfolding.

    ``ab`` gives ``a (B, T, d_in)`` and ``b (B, T, d_out)``; ``weight_shape``
    turns the ``(d_out, d_in)`` matrix back into the parameter's shape.
    """

    def ab(self, call: Call) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def grads(self, call: Call, rows: slice) -> Grads:
        a, b = self.ab(call)
        a, b = a[rows], b[rows]
        w = call.module.weight
        out = {"weight": (b.flatten(0, 1).T @ a.flatten(0, 1)).reshape(w.shape)}  # (d_out, d_in)
        if getattr(call.module, "bias", None) is not None:
            out["bias"] = b.sum((0, 1))
        return out

    def dot(self, call: Call, rows: slice, V: Grads) -> torch.Tensor:
        # <sum_t b_t a_t^T, V> = sum_t b_t . (V a_t): one matmul of the rows, no per-example matrices.
        a, b = self.ab(call)
        a, b = a[rows], b[rows]
        Vw = V["weight"].reshape(b.shape[-1], a.shape[-1])  # (d_out, d_in)
        # V a_t + c for every row and position in one fused call (the bias term is sum_t b_t . c).
        y = F.linear(a, Vw, V.get("bias"))  # (n, T, d_out)
        # In place on y (ours): inside the training step on this CPU, linalg.vecdot over the
        # flattened rows measured slower than a multiply and a sum.
        return y.mul_(b).flatten(1).sum(1)  # (n,)

    def ghost(self, call: Call, rows: slice, vrows: slice) -> Grads:
        a, b = self.ab(call)
        ai, bi, av, bv = a[rows], b[rows], a[vrows], b[vrows]
        av, bv = av.flatten(0, 1), bv.flatten(0, 1)  # the validation rows as one long sequence (mS, d)
        # (n, T, mS) Gram matrices of inputs and of output gradients; their
        # elementwise product summed is sum_v <g_i, g_v>.
        out = {"weight": ((ai @ av.T) * (bi @ bv.T)).sum((1, 2))}
        if getattr(call.module, "bias", None) is not None:
            out["bias"] = bi.sum(1) @ bv.sum(0)
        return out

    def ghost_pays(self, call: Call, rows: slice, vrows: slice) -> bool:
        # The rule of Wang et al. is about memory: two T x S Gram matrices per
        # example against d_in * d_out numbers for its materialized gradient, S
        # counting all validation tokens (they are summed, so they act as one
        # sequence). But ``dot`` never materializes g_i: it costs d_in * d_out
        # multiply-adds per training token (V a_t), where the Gram rows cost
        # S * (d_in + d_out). On a CPU the arithmetic decides, so both must hold:
        # with 8 validation rows of 31 tokens at width 128 the memory rule alone
        # chose Gram matrices 2.6x dearer (breast-cancer, SGD: 0.39x plain speed).
        a, b = self.ab(call)
        d_in, d_out = a.shape[-1], b.shape[-1]
        T = a.shape[1]
        S = a[vrows].shape[0] * T
        return 2 * T * S < d_in * d_out and S * (d_in + d_out) < d_in * d_out


@register_rule(nn.Linear)
class LinearRule(_Outer):
    def ab(self, call: Call) -> tuple[torch.Tensor, torch.Tensor]:
        return _tokens(call.inputs[0]), _tokens(call.grad)

    def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
        return nn.Linear(5, 3), lambda g: (torch.randn(4, 6, 5, generator=g),)


class _ConvRule(_Outer):
    dims = 2

    def check(self, module: nn.Module) -> str | None:
        m: Any = module
        if m.groups != 1:
            return f"groups={m.groups} (only groups=1 convolutions are supported)"
        if m.padding_mode != "zeros":
            return f"padding_mode='{m.padding_mode}' (only zero padding is supported)"
        if isinstance(m.padding, str) and m.padding != "valid":
            return f"padding='{m.padding}' (give the padding as numbers)"
        return None

    def _geometry(self, m: Any) -> dict[str, Any]:
        pad = (0,) * self.dims if isinstance(m.padding, str) else m.padding
        return {"stride": m.stride, "padding": pad, "dilation": m.dilation}

    def ab(self, call: Call) -> tuple[torch.Tensor, torch.Tensor]:
        # Only the ghost form needs the unfolded input (im2col is slow on CPU); cached per call.
        if "ab" not in call.cache:
            m: Any = call.module
            geo = self._geometry(m)
            x = call.inputs[0]
            k, d, p, s = m.kernel_size, geo["dilation"], geo["padding"], geo["stride"]
            if self.dims == 1:  # a 1-D convolution is a 2-D one over a height of 1
                x, k, d, p, s = x.unsqueeze(2), (1, *k), (1, *d), (0, *p), (1, *s)
            a = F.unfold(x, k, dilation=d, padding=p, stride=s)  # (B, C_in * k, L)
            b = call.grad.flatten(2)  # (B, C_out, L)
            call.cache["ab"] = (a.transpose(1, 2), b.transpose(1, 2))  # (B, L, C_in * k), (B, L, C_out)
        return call.cache["ab"]

    def grads(self, call: Call, rows: slice) -> Grads:
        # The weight gradient through the convolution's own backward kernel, as autograd would.
        m: Any = call.module
        geo = self._geometry(m)
        has_bias = m.bias is not None
        _, gw, gb = torch.ops.aten.convolution_backward(
            call.grad[rows],
            call.inputs[0][rows],
            m.weight,
            [m.out_channels] if has_bias else None,
            list(geo["stride"]),
            list(geo["padding"]),
            list(geo["dilation"]),
            False,
            [0] * self.dims,
            1,
            [False, True, has_bias],
        )
        return {"weight": gw, "bias": gb} if has_bias else {"weight": gw}

    def dot(self, call: Call, rows: slice, V: Grads) -> torch.Tensor:
        # sum_t b_t . (V a_t) is the convolution of the input with V as its kernel, against b.
        m: Any = call.module
        conv = F.conv1d if self.dims == 1 else F.conv2d
        b = call.grad[rows]
        y = conv(call.inputs[0][rows], V["weight"], V.get("bias"), **self._geometry(m))  # (n, C_out, *L)
        return y.mul_(b).flatten(1).sum(1)  # the bias term rides in y

    def ghost_pays(self, call: Call, rows: slice, vrows: slice) -> bool:
        # The paper's rule, plus the unfolded input the Gram matrices need (im2col
        # is not free: on this CPU it costs more than the convolution itself).
        m: Any = call.module
        T = call.grad[0, 0].numel()  # output positions per example
        S = call.grad[vrows].shape[0] * T
        return 2 * T * S + T * m.weight[0].numel() < m.weight.numel()


@register_rule(nn.Conv2d)
class Conv2dRule(_ConvRule):
    dims = 2

    def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
        return nn.Conv2d(3, 4, 3, padding=1, stride=2), lambda g: (torch.randn(4, 3, 7, 6, generator=g),)


@register_rule(nn.Conv1d)
class Conv1dRule(_ConvRule):
    dims = 1

    def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
        return nn.Conv1d(3, 4, 3, padding=2, dilation=2), lambda g: (torch.randn(4, 3, 9, generator=g),)


# -- embeddings: a row of the table per token -----------------------------------------------
@register_rule(nn.Embedding)
class EmbeddingRule(Rule):
    def check(self, module: nn.Module) -> str | None:
        if module.max_norm is not None:  # type: ignore[union-attr]
            return "max_norm is set (the forward rewrites the table in place)"
        return None

    def _ids_b(self, call: Call, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        ids, b = call.inputs[0][rows], call.grad[rows]
        ids = ids.reshape(ids.shape[0], -1)  # (n, T)
        b = b.reshape(ids.shape[0], ids.shape[1], -1)  # (n, T, d)
        pad = call.module.padding_idx
        if pad is not None:  # the padding row never gets a gradient
            b = b * (ids != pad).unsqueeze(-1).to(b.dtype)
        return ids, b

    def grads(self, call: Call, rows: slice) -> Grads:
        ids, b = self._ids_b(call, rows)
        w = call.module.weight
        g = torch.zeros_like(w).index_add_(0, ids.flatten(), b.flatten(0, 1))  # (V, d)
        return {"weight": g}

    def dot(self, call: Call, rows: slice, V: Grads) -> torch.Tensor:
        ids, b = self._ids_b(call, rows)
        return (V["weight"][ids] * b).sum((1, 2))  # a gather, not a matmul: (n,)

    def ghost(self, call: Call, rows: slice, vrows: slice) -> Grads:
        ids, b = self._ids_b(call, rows)
        vid, vb = self._ids_b(call, vrows)
        vid, vb = vid.flatten(), vb.flatten(0, 1)  # (mS,), (mS, d)
        same = (ids.unsqueeze(-1) == vid).to(b.dtype)  # (n, T, mS): one-hot inputs' Gram matrix
        return {"weight": (same * (b @ vb.T)).sum((1, 2))}

    def ghost_pays(self, call: Call, rows: slice, vrows: slice) -> bool:
        w = call.module.weight
        T = call.inputs[0][0].numel()
        S = call.inputs[0][vrows].numel()
        return 2 * T * S < w.numel()

    def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
        return nn.Embedding(7, 3, padding_idx=0), lambda g: (torch.randint(0, 7, (4, 5), generator=g),)


# -- normalization layers: tiny parameters, materialized per example -------------------------
def _sum_to(x: torch.Tensor, dims: int) -> torch.Tensor:
    """(B, ..., *shape) summed over the middle, keeping B and the trailing ``dims`` dims."""
    return x.reshape(x.shape[0], -1, *x.shape[x.ndim - dims :]).sum(1)


def _saved_stats(output: torch.Tensor, backward: str) -> dict[str, Any]:
    """The mean and 1/std that a normalization's autograd node saved, if it is the expected node.

    Rebuilding xhat from them is two elementwise passes; recomputing the
    normalization was the dearest part of valuing a LayerNorm (on this CPU
    ``F.layer_norm`` without an affine part takes 190 us for 65 x 17 x 64
    numbers, the two passes 40 us). Private attribute names of autograd's
    generated nodes, stable for years; anything unexpected falls back to
    recomputing.
    """
    node = output.grad_fn
    if type(node).__name__ != backward:
        return {}
    try:
        return {"stats": (node._saved_result1.detach(), node._saved_result2.detach())}  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):
        return {}


@register_rule(nn.LayerNorm)
class LayerNormRule(Rule):
    # No per-example materialization: the gradient is sum_t b_t * xhat_t (+ b_t for the
    # bias), so grads sum over every row and position at once and dot folds V into one product.
    def capture(self, module: nn.Module, output: torch.Tensor) -> dict[str, Any]:
        return _saved_stats(output, "NativeLayerNormBackward0")

    def _xhat(self, call: Call) -> torch.Tensor:
        m: Any = call.module
        if "xhat" not in call.cache:  # once per call, for training and validation rows together
            x = call.inputs[0]
            stats = call.cache.get("stats")
            nd = len(m.normalized_shape)
            if stats is not None and stats[0].shape == x.shape[: x.ndim - nd] + (1,) * nd:
                mean, rstd = stats
                call.cache["xhat"] = (x - mean).mul_(rstd)
            else:
                call.cache["xhat"] = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
        return call.cache["xhat"]

    def per_example(self, call: Call, rows: slice) -> Grads:
        m: Any = call.module
        xhat, b = self._xhat(call)[rows], call.grad[rows]
        nd = len(m.normalized_shape)
        out = {}
        if m.weight is not None:
            out["weight"] = _sum_to(b * xhat, nd)  # (n, *shape)
        if m.bias is not None:
            out["bias"] = _sum_to(b, nd)
        return out

    def grads(self, call: Call, rows: slice) -> Grads:
        m: Any = call.module
        xhat, b = self._xhat(call)[rows], call.grad[rows]
        shape = tuple(m.normalized_shape)
        out = {}
        if m.weight is not None:
            out["weight"] = (b * xhat).reshape(-1, *shape).sum(0)
        if m.bias is not None:
            out["bias"] = b.reshape(-1, *shape).sum(0)
        return out

    def dot(self, call: Call, rows: slice, V: Grads) -> torch.Tensor:
        xhat, b = self._xhat(call)[rows], call.grad[rows]
        if "weight" in V and "bias" in V:
            y = torch.addcmul(V["bias"], xhat, V["weight"])  # one pass for xhat * w_V + c_V
        elif "weight" in V:
            y = xhat * V["weight"]
        else:
            y = V["bias"].expand_as(b).clone()
        return y.mul_(b).flatten(1).sum(1)  # in place: y is ours, and one temporary less

    def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
        return nn.LayerNorm(5), lambda g: (torch.randn(4, 6, 5, generator=g),)


@register_rule(nn.RMSNorm)
class RMSNormRule(Rule):
    def per_example(self, call: Call, rows: slice) -> Grads:
        m: Any = call.module
        x, b = call.inputs[0][rows], call.grad[rows]
        xhat = F.rms_norm(x, m.normalized_shape, None, m.eps)
        return {"weight": _sum_to(b * xhat, len(m.normalized_shape))} if m.weight is not None else {}

    def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
        return nn.RMSNorm(5, eps=1e-5), lambda g: (torch.randn(4, 6, 5, generator=g),)


@register_rule(nn.GroupNorm)
class GroupNormRule(Rule):
    def capture(self, module: nn.Module, output: torch.Tensor) -> dict[str, Any]:
        return _saved_stats(output, "NativeGroupNormBackward0")

    def per_example(self, call: Call, rows: slice) -> Grads:
        m: Any = call.module
        x, b = call.inputs[0][rows], call.grad[rows]  # (n, C, *)
        stats = call.cache.get("stats")
        if stats is not None and stats[0].shape == (call.inputs[0].shape[0], m.num_groups):
            mean, rstd = (s[rows].unsqueeze(-1) for s in stats)  # (n, G, 1)
            xhat = ((x.reshape(len(x), m.num_groups, -1) - mean) * rstd).view_as(x)
        else:
            xhat = F.group_norm(x, m.num_groups, None, None, m.eps)
        if not m.affine:
            return {}
        return {"weight": (b * xhat).flatten(2).sum(2), "bias": b.flatten(2).sum(2)}  # (n, C)

    def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
        return nn.GroupNorm(2, 4), lambda g: (torch.randn(4, 4, 3, 3, generator=g),)


# -- the glassbox model family's own layers -------------------------------------------------
def _family_rules() -> None:
    """Rules for glassbox.nn's layers with raw parameters (tokenizers, per-head norms)."""
    from glassbox.nn.kinds.deltanet import HeadRMSNorm
    from glassbox.nn.kinds.gla import GLAOutput
    from glassbox.nn.tokenizers import ImageTokenizer, TabularTokenizer

    @register_rule(TabularTokenizer)
    class TabularTokenizerRule(Rule):
        # token_j = z_j * W_j + c_j, CLS first: the gradient of W_j is z_j * b_j.
        def per_example(self, call: Call, rows: slice) -> Grads:
            m: Any = call.module
            x, b = call.inputs[0][rows], call.grad[rows]  # (n, F), (n, 1 + F, dim)
            z = (x - m.mean) / m.std
            return {
                "weight": z.unsqueeze(-1) * b[:, 1:],  # (n, F, dim)
                "bias": b[:, 1:],
                "cls": b[:, :1].unsqueeze(1),  # (n, 1, 1, dim)
            }

        def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
            return TabularTokenizer(3, 4), lambda g: (torch.randn(4, 3, generator=g),)

    @register_rule(ImageTokenizer)
    class ImageTokenizerRule(Rule):
        # Only the tokenizer's own CLS and position table; the stem and patch
        # convolutions inside it have their own rules.
        def per_example(self, call: Call, rows: slice) -> Grads:
            b = call.grad[rows]  # (n, 1 + P, dim)
            return {"cls": b[:, :1].unsqueeze(1), "pos": b.unsqueeze(1)}

        def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
            return ImageTokenizer((1, 4, 4), 4, 2), lambda g: (torch.rand(4, 1, 4, 4, generator=g),)

    @register_rule(HeadRMSNorm)
    class HeadRMSNormRule(Rule):
        def per_example(self, call: Call, rows: slice) -> Grads:
            m: Any = call.module
            y, b = call.inputs[0][rows], call.grad[rows]  # (n, T, H, D)
            yhat = F.rms_norm(y, (y.shape[-1],), None, m.eps)
            return {"weight": _sum_to(b * yhat, 1)}  # (n, D)

        def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
            return HeadRMSNorm(4, 2, 2), lambda g: (
                torch.randn(4, 5, 2, 2, generator=g),
                torch.randn(4, 5, 4),
            )

    @register_rule(GLAOutput)
    class GLAOutputRule(Rule):
        # out = rms(y) * w * silu(gate(x)); the gate is a Linear with its own
        # rule, recomputed here with F.linear so that no hook fires twice.
        def per_example(self, call: Call, rows: slice) -> Grads:
            m: Any = call.module
            y, x, b = call.inputs[0][rows], call.inputs[1][rows], call.grad[rows]
            yhat = F.rms_norm(y, (y.shape[-1],), None, m.eps)
            gate = F.silu(F.linear(x, m.gate.weight, m.gate.bias)).view(y.shape)
            return {"weight": _sum_to(b * yhat * gate, 1)}  # (n, D)

        def example(self) -> tuple[nn.Module, Callable[[torch.Generator], tuple[Any, ...]]]:
            return GLAOutput(4, 2, 2), lambda g: (
                torch.randn(4, 5, 2, 2, generator=g),
                torch.randn(4, 5, 4, generator=g),
            )


_family_rules()


def rule_for(module: nn.Module) -> Rule | None:
    return RULES.get(type(module))


def supported_names() -> str:
    return ", ".join(sorted({c.__name__ for c in RULES}))
