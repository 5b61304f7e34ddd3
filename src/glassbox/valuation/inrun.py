"""In-run Data Shapley (Wang, Mittal, Song, Jia; ICLR 2025): every training example valued in one run.

At step t the optimizer moves the weights by ``-sum_i U_i``, one term per
example of the batch. The utility of a subset S of the batch is the drop in
validation loss it causes, ``l_val(w) - l_val(w - sum_{i in S} U_i)``. Its
Taylor expansion to second order is a sum of pairwise terms, whose Shapley
values are exact and closed-form:

    phi_i = g_val . U_i  -  1/2 U_i^T H_val sum_{j in B} U_j

(first order only with ``order=1``). Positive means helpful. Summed over
the steps an example took part in, this is its in-run value.

What ``U_i`` is depends on the optimizer, and getting it right is most of
the work (GhostSuite, the authors' code, covers plain SGD only):

- SGD: ``U_i = lr * k * clip * g_i``, ``g_i`` the example's gradient of its
  term in the batch loss (so mean reduction, class weights and gradient
  accumulation are in it), ``clip`` the factor gradient clipping applies to
  the whole step, ``k`` momentum's share of the fresh gradient (1, or
  ``1 - dampening`` once the buffer exists; ``1 + momentum * that`` for
  Nesterov).
- Adam/AdamW: ``U_i = lr (1 - b1) / (1 - b1^t) * clip * g_i / (sqrt(v_t / (1 - b2^t)) + eps)``:
  the update direction Adam takes, linearized at the step's own second
  moment ``v_t`` (held fixed, though it depends on the batch a little).
- Not attributed to any example of the batch: the momentum carried over
  from earlier steps (b1 m_{t-1}, SGD's buffer) and weight decay. An
  example's gradient keeps acting through momentum in later steps; this
  counts only the step it was in, as the paper does.

How it is computed (one forward, one backward): the step's validation rows
are appended to its training rows, their loss scaled by ``VAL_SCALE``
(2^-12); forward hooks keep each layer's input and tensor hooks its output
gradient during the one ``backward``. Autograd's own fused kernels compute
the weight gradients of all rows (measured here about 4x faster than
rebuilding them from the activations); per layer
(``glassbox.valuation.rules``), the validation rows' share is computed from
the same activations and subtracted, which leaves exactly the training
gradient for the optimizer and gives the validation gradient. Each training
example's ``<g_i, V>`` is then read off without materializing g_i (one
product of the layer's input with V, against its output gradient). With SGD
at first order a layer may instead use ghost dot products (Gram matrices of
inputs and of output gradients) when the paper's rule says they are
cheaper. The second-order term needs ``H_val (sum_j U_j)``: one extra
Hessian-vector product on the validation rows (a double backward through
the attention kinds' naive twins, since the fused kernels are
differentiable once).

What it costs (docs/BENCHMARKS.md): every step forwards and backwards
``val_batch`` more rows, and the per-example products cost about one more
forward matmul per layer; on this CPU's small models first order runs at
roughly 0.6-0.75x the plain throughput, second order 0.3-0.5x.

Validation rows come ``val_batch`` at a time from a seeded rotation over
the validation split, so every validation example is used over the run.
They share the training forward, dropout included: set model.dropout: 0 for
a noise-free validation gradient.

>>> import torch
>>> from glassbox.config import ModelConfig, TrainConfig
>>> from glassbox.data import load_dataset, split_dataset
>>> from glassbox.nn import build_model
>>> from glassbox.train import Trainer
>>> tr, va, _ = split_dataset(load_dataset("iris"), 0.2, 0.2, seed=0)
>>> val = InRunValuation(order=1, val_batch=8)
>>> model = build_model(ModelConfig(dim=16, depth=1, dropout=0.0), tr)
>>> _ = Trainer(model, TrainConfig(epochs=2, batch_size=16), callbacks=[val]).fit(tr, va)
>>> val.values_.shape == (len(tr),), bool(abs(val.values_).sum() > 0)
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from glassbox.errors import UserError
from glassbox.train.callbacks import Callback, MicroBatch, StepInfo
from glassbox.valuation.rules import Call, Rule, rule_for, supported_names

if TYPE_CHECKING:
    from glassbox.data.base import Dataset
    from glassbox.train.trainer import Trainer

# The validation loss enters the shared backward scaled by this power of two:
# exact to undo, and small enough that its share of a weight gradient leaves
# no trace after subtraction, yet far above float32's smallest normal number.
VAL_SCALE = 2.0**-12


def _keeper(store: list[torch.Tensor | None], i: int) -> Any:
    def hook(grad: torch.Tensor) -> None:
        store[i] = grad

    return hook


@dataclass
class _Layer:
    name: str
    module: nn.Module
    rule: Rule
    params: dict[str, nn.Parameter]  # the module's own trainable parameters by local name


@dataclass
class _Micro:
    """What one micro-batch left behind for the step's valuation."""

    positions: torch.Tensor  # (n,) rows of the training Dataset
    n: int
    calls: list[tuple[_Layer, Call]] = field(default_factory=list)
    has_val: bool = False
    gval: dict[nn.Parameter, torch.Tensor] = field(default_factory=dict)  # VAL_SCALE x validation gradient


class InRunValuation(Callback):
    """Values every training example during ``Trainer.fit``; see the module docstring for the maths.

    ``order``: 1 (first-order, TracIn-ideal per step) or 2 (adds the
    Hessian term). ``val_batch``: validation rows per step. ``ghost``:
    ``auto`` picks ghost dot products per layer by the paper's rule where
    they apply (SGD, first order), ``never`` always materializes the
    validation gradient, ``always`` uses ghost products wherever a layer has
    them (for tests). ``val``: the validation data, default the Trainer's.

    Learned state: ``values_`` (N,) float64, one per row of the training
    Dataset, summed over steps; ``steps_``; ``layers_`` (the valued layers
    and which form each used last: ``ghost`` or ``materialized``).
    """

    def __init__(
        self,
        *,
        order: Literal[1, 2] = 1,
        val_batch: int = 32,
        ghost: Literal["auto", "never", "always"] = "auto",
        seed: int = 0,
        val: Dataset | None = None,
    ) -> None:
        if order not in (1, 2):
            raise UserError(f"valuation.order must be 1 or 2, got {order!r}")
        if val_batch < 1:
            raise UserError(f"valuation.val_batch must be at least 1, got {val_batch}")
        self.order = order
        self.val_batch = val_batch
        self.ghost = ghost
        self.seed = seed
        self.val = val

    # -- attaching -------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer) -> None:
        self._model = trainer.model
        self._layers = attach_layers(trainer.model)
        self._check_optimizer(trainer.optimizer_)
        self._flat = Flat([p for layer in self._layers for p in layer.params.values()], trainer.optimizer_)
        val = self.val if self.val is not None else trainer.val_data_
        if val is None or len(val) == 0:
            raise UserError(
                "in-run valuation measures each example against validation data, and there is none; "
                "set data.val_fraction above 0"
            )
        self._val = val
        self._task = trainer.task_
        self.values_ = np.zeros(len(trainer.train_data_), dtype=np.float64)
        self.steps_ = 0
        self._pass, self._cursor = 0, 0
        self._order = self._val_order(0)
        self._recording = False
        self._calls: list[tuple[_Layer, torch.Tensor, tuple[Any, ...], dict[str, Any]]] = []
        self._micros: list[_Micro] = []
        self._val_rows: tuple[torch.Tensor, torch.Tensor] | None = None
        self._hooks = [layer.module.register_forward_hook(self._hook(layer)) for layer in self._layers]
        self.layers_: dict[str, str] = {layer.name: "materialized" for layer in self._layers}

    def _check_optimizer(self, opt: torch.optim.Optimizer) -> None:
        if not isinstance(opt, (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)):
            raise UserError(
                f"in-run valuation knows how SGD, Adam and AdamW step, not {type(opt).__name__}; "
                "set train.optimizer to sgd or adamw"
            )
        for group in opt.param_groups:
            if group.get("maximize"):
                raise UserError("in-run valuation assumes the optimizer minimizes the loss (maximize=False)")
            if group.get("amsgrad"):
                raise UserError("in-run valuation does not model AMSGrad's running maximum; turn amsgrad off")

    def _hook(self, layer: _Layer) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not self._recording:
                return
            if not isinstance(output, torch.Tensor) or output.shape[:1] != (self._rows,):
                raise ValueError(
                    f"layer '{layer.name}' ({type(module).__name__}) returned "
                    f"{getattr(output, 'shape', type(output))} for a batch of {self._rows} rows: "
                    "in-run valuation needs every valued layer's output batched by rows"
                )
            inputs = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
            self._calls.append((layer, output, inputs, layer.rule.capture(module, output)))

        return hook

    def on_fit_end(self, trainer: Trainer) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.values_ = self._global_values()  # under DDP each rank valued its own rows

    def _global_values(self) -> np.ndarray:
        from glassbox.train import distributed

        if not distributed.current().active:
            return self.values_
        total = torch.from_numpy(self.values_.copy())  # float64: the sum stays exact to rounding
        distributed.all_reduce_sum([total])
        return total.numpy()

    # -- validation rows -------------------------------------------------------------------
    def _val_order(self, p: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * p + 1)
        return torch.randperm(len(self._val), generator=g)

    def _next_val_rows(self) -> torch.Tensor:
        m = min(self.val_batch, len(self._val))
        if self._cursor + m > len(self._order):
            self._pass, self._cursor = self._pass + 1, 0
            self._order = self._val_order(self._pass)
        rows = self._order[self._cursor : self._cursor + m]
        self._cursor += m
        return rows

    # -- one micro-batch: forward, backward, rebuilt training gradient ---------------------
    def forward_backward(self, trainer: Trainer, micro: MicroBatch) -> torch.Tensor:
        n = len(micro.indices)
        x, y = micro.x, micro.y
        with_val = micro.number == 0  # the validation gradient is the same for every micro-batch
        if with_val:
            rows = self._next_val_rows()
            xv, yv = trainer.inputs_targets(self._val.X[rows], self._val.y[rows], self._task)
            self._val_rows = (xv, yv)
            x, y_all = torch.cat([x, xv]), torch.cat([y, yv])
        else:
            y_all = y
        self._rows = len(x)
        self._calls = []
        self._recording = True
        try:
            logits = self._model(x)
        finally:
            self._recording = False
        train_loss = trainer.example_losses(logits[:n], y_all[:n], self._task).sum() * micro.scale
        total = train_loss
        if with_val:
            # The validation loss as evaluation sees it (unweighted, mean over rows),
            # scaled by VAL_SCALE so its share of each weight gradient is tiny.
            val_loss = trainer.loss_fn(logits[n:], y_all[n:], self._task, reduction="none").mean()
            total = total + VAL_SCALE * val_loss
        # One backward: autograd's fused kernels compute the weight gradients of
        # all rows (on this CPU about 4x faster than rebuilding them from the
        # activations), and hooks on the layers' outputs keep the output gradients.
        grads: list[torch.Tensor | None] = [None] * len(self._calls)
        handles = [out.register_hook(_keeper(grads, i)) for i, (_, out, _, _) in enumerate(self._calls)]
        try:
            total.backward()
        finally:
            for h in handles:
                h.remove()
        record = _Micro(micro.indices, n, has_val=with_val)
        for (layer, out, inputs, kept), g in zip(self._calls, grads, strict=True):
            grad = torch.zeros_like(out) if g is None else g
            record.calls.append((layer, Call(layer.module, inputs, grad, cache=kept)))
        if with_val:
            with torch.no_grad():
                record.gval = self._remove_validation(record, slice(n, None))
        self._calls = []
        self._micros.append(record)
        return train_loss.detach()

    def _remove_validation(self, record: _Micro, vrows: slice) -> dict[nn.Parameter, torch.Tensor]:
        """Take the validation rows' share out of ``.grad``; returns it (VAL_SCALE x their gradient).

        The share is VAL_SCALE times the validation gradient, computed from the
        same activations by the layers' rules, so what is left in ``.grad`` is
        the training gradient to within rounding of VAL_SCALE * that share.
        """
        gval: dict[nn.Parameter, torch.Tensor] = {}
        for layer, call in record.calls:
            for name, g in layer.rule.grads(call, vrows).items():
                p = layer.params.get(name)
                if p is None or p.grad is None:
                    continue
                p.grad.sub_(g)
                gval[p] = gval[p] + g if p in gval else g
        return gval  # still times VAL_SCALE; on_after_backward undoes it in one flat op

    # -- the step: coefficients, validation vector, per-example dot products ---------------
    @torch.no_grad()
    def on_after_backward(self, trainer: Trainer, info: StepInfo) -> None:
        if not self._micros:
            return
        flat = self._flat
        G = flat.cat([p.grad for p in flat.params])  # (P,) the step's training gradient
        clip = _clip_factor(G, trainer.config.grad_clip)
        coef, scalars = flat.coefficients(trainer.optimizer_, G, clip)  # (P,)
        first = next(m for m in self._micros if m.has_val)
        vrows = slice(first.n, None)
        # The validation rows rode with the first micro-batch, scaled by VAL_SCALE.
        gval = flat.cat([first.gval.get(p) for p in flat.params])
        V = coef * gval * (clip / VAL_SCALE)
        if self.order == 2:
            Hu = flat.cat_dict(self._hvp(trainer, flat.split(coef * G * clip)))
            V -= coef * Hu * (0.5 * clip)
        Vp = flat.split(V)
        counts = _call_counts(first.calls)
        for micro in self._micros:
            parts = []
            rows = slice(0, micro.n)
            for layer, call in micro.calls:
                if self._use_ghost(layer, call, scalars, counts, micro is first, rows, vrows):
                    self.layers_[layer.name] = "ghost"
                    for name, d in layer.rule.ghost(call, rows, vrows).items():
                        p = layer.params.get(name)
                        if p is not None:
                            parts.append(d * (clip * scalars[p] / VAL_SCALE))
                    continue
                parts.append(layer.rule.dot(call, rows, {name: Vp[p] for name, p in layer.params.items()}))
            # Summed in float64: a step's value is small beside the running total.
            total = torch.stack(parts).double().sum(0) if parts else torch.zeros(micro.n)
            np.add.at(self.values_, micro.positions.numpy(), total.numpy())
        self._micros = []
        self.steps_ += 1

    def _use_ghost(
        self,
        layer: _Layer,
        call: Call,
        scalars: dict[nn.Parameter, float] | None,
        counts: dict[int, int],
        same_micro: bool,
        rows: slice,
        vrows: slice,
    ) -> bool:
        # Ghost products pair rows of one forward, so only within the micro-batch
        # that carried the validation rows, only for a layer called once (cross
        # terms between calls would be missed), and only where the step scales
        # each parameter by one number (SGD) and nothing but g_val is dotted.
        if self.ghost == "never" or self.order != 1 or not same_micro:
            return False
        if counts[id(layer.module)] != 1 or type(layer.rule).ghost is Rule.ghost:
            return False
        if scalars is None:
            return False
        return self.ghost == "always" or layer.rule.ghost_pays(call, rows, vrows)

    @torch.enable_grad()
    def _hvp(self, trainer: Trainer, U: dict[nn.Parameter, torch.Tensor]) -> dict[nn.Parameter, torch.Tensor]:
        """H_val U on the step's validation rows: one double backward through the naive attention twins."""
        from glassbox.nn.attention import reference_kernels

        assert self._val_rows is not None
        xv, yv = self._val_rows
        params = list(U)
        with reference_kernels():
            logits = self._model(xv)
        loss = trainer.loss_fn(logits, yv, self._task, reduction="none").mean()
        g = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        dot = sum((gi * U[p]).sum() for gi, p in zip(g, params, strict=True) if gi is not None)
        if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
            return {}
        h = torch.autograd.grad(dot, params, allow_unused=True)
        return {p: hi.detach() for p, hi in zip(params, h, strict=True) if hi is not None}

    # -- resume ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            # Every rank calls this at a checkpoint; the sum over ranks is what rank 0 saves.
            "values": torch.from_numpy(self._global_values().copy()),
            "steps": self.steps_,
            "pass": self._pass,
            "cursor": self._cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from glassbox.train import distributed

        self.values_ = state["values"].numpy().astype(np.float64)
        if not distributed.current().main:
            self.values_ = np.zeros_like(self.values_)  # rank 0 carries the saved sum; the others add to it
        self.steps_ = int(state["steps"])
        self._pass, self._cursor = int(state["pass"]), int(state["cursor"])
        self._order = self._val_order(self._pass)


def attach_layers(model: nn.Module) -> list[_Layer]:
    """Every module with its own trainable parameters, with its rule; refuses what has no rule."""
    layers = []
    for name, module in model.named_modules():
        own = {k: p for k, p in module.named_parameters(recurse=False) if p.requires_grad}
        if not own:
            continue
        label = name or type(model).__name__
        rule = rule_for(module)
        if rule is None:
            raise UserError(
                f"in-run valuation cannot value through layer '{label}' ({type(module).__name__}): "
                f"no per-example gradient rule for it (supported: {supported_names()}); "
                "freeze it (requires_grad=False) or use valuation.method: knn_shapley"
            )
        why = rule.check(module)
        if why is not None:
            raise UserError(
                f"in-run valuation cannot value through layer '{label}' ({type(module).__name__}): {why}"
            )
        layers.append(_Layer(label, module, rule, own))
    if not layers:
        raise UserError("in-run valuation found no trainable parameters in the model")
    return layers


def _call_counts(calls: list[tuple[_Layer, Call]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for layer, _ in calls:
        counts[id(layer.module)] = counts.get(id(layer.module), 0) + 1
    return counts


def _clip_factor(G: torch.Tensor, max_norm: float | None) -> float:
    """The factor ``clip_grad_norm_`` will scale the step's gradient by (its own formula)."""
    if max_norm is None:
        return 1.0
    return min(1.0, max_norm / (float(torch.linalg.vector_norm(G)) + 1e-6))


class Flat:
    """The valued parameters laid end to end, grouped as the optimizer groups them.

    The step's arithmetic (clip norm, Adam's preconditioner, the validation
    vector) then costs a handful of operations on one vector of P numbers
    instead of a handful per parameter tensor: on a small model on a CPU,
    per-tensor dispatch (foreach ops included, which loop on the CPU) costs
    more than the arithmetic.
    """

    def __init__(self, params: list[nn.Parameter], opt: torch.optim.Optimizer) -> None:
        ours = {id(p) for p in params}
        order: list[nn.Parameter] = []
        self.groups: list[tuple[dict[str, Any], int, int, list[nn.Parameter]]] = []
        for group in opt.param_groups:
            ps = [p for p in group["params"] if id(p) in ours]
            if ps:
                lo = sum(p.numel() for p in order)
                order += ps
                self.groups.append((group, lo, lo + sum(p.numel() for p in ps), ps))
        missing = ours - {id(p) for p in order}
        if missing:
            raise UserError(
                f"{len(missing)} trainable parameter(s) of the model are not in the optimizer; "
                "in-run valuation values the steps the optimizer takes, so give it every trainable parameter"
            )
        self.params = order
        self.sizes = [p.numel() for p in order]

    def cat(self, tensors: list[torch.Tensor | None]) -> torch.Tensor:
        """One vector from per-parameter tensors (None: zeros)."""
        ref = self.params[0]
        return torch.cat(
            [
                t.reshape(-1) if t is not None else torch.zeros(n, dtype=ref.dtype, device=ref.device)
                for t, n in zip(tensors, self.sizes, strict=True)
            ]
        )

    def cat_dict(self, by_param: dict[nn.Parameter, torch.Tensor]) -> torch.Tensor:
        return self.cat([by_param.get(p) for p in self.params])

    def split(self, flat: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        """Per-parameter views of a flat vector."""
        return {p: x.view(p.shape) for p, x in zip(self.params, flat.split(self.sizes), strict=True)}

    def coefficients(
        self, opt: torch.optim.Optimizer, G: torch.Tensor, clip: float = 1.0
    ) -> tuple[torch.Tensor, dict[nn.Parameter, float] | None]:
        """How far the coming step moves each coordinate per unit of its clipped fresh gradient.

        Returns the flat coefficients and, for SGD, one number per parameter
        (what the ghost form needs). Adam and AdamW: the preconditioner of
        this step, from the optimizer's state and the step's own gradient
        (the second moment it is about to store).
        """
        pieces: list[torch.Tensor] = []
        scalars: dict[nn.Parameter, float] | None = {}
        adam = isinstance(opt, (torch.optim.Adam, torch.optim.AdamW))
        for group, lo, hi, ps in self.groups:
            lr = float(group["lr"])
            if not adam:
                mu, damp = group["momentum"], group["dampening"]
                ks = []
                for p in ps:
                    k = 1.0 if mu == 0 or opt.state.get(p, {}).get("momentum_buffer") is None else 1.0 - damp
                    ks.append(lr * (1.0 + mu * k if group["nesterov"] and mu != 0 else k))
                assert scalars is not None
                scalars.update(zip(ps, ks, strict=True))
                sizes = torch.tensor([p.numel() for p in ps])
                pieces.append(torch.repeat_interleave(torch.tensor(ks, dtype=G.dtype), sizes))
                continue
            scalars = None
            b1, b2 = group["betas"]
            states = [opt.state.get(p, {}) for p in ps]
            steps = {float(st["step"]) if "step" in st else 0.0 for st in states}
            if len(steps) > 1:
                raise ValueError("in-run valuation expects every parameter of a group to share Adam's step")
            t = steps.pop() + 1
            g = G[lo:hi] * clip
            decoupled = isinstance(opt, torch.optim.AdamW) or group.get("decoupled_weight_decay", False)
            if group["weight_decay"] and not decoupled:  # Adam's L2 term enters the moments
                g = g + group["weight_decay"] * torch.cat([p.detach().reshape(-1) for p in ps])
            v = (1 - b2) * g * g
            if t > 1:
                v += b2 * torch.cat([st["exp_avg_sq"].reshape(-1) for st in states])
            denom = v.sqrt_().div_(math.sqrt(1 - b2**t)).add_(group["eps"])
            pieces.append(denom.reciprocal_().mul_(lr * (1 - b1) / (1 - b1**t)))
        return torch.cat(pieces), scalars


def step_coefficients(
    opt: torch.optim.Optimizer, grads: dict[nn.Parameter, torch.Tensor], clip: float = 1.0
) -> dict[nn.Parameter, torch.Tensor]:
    """Per parameter, how far the coming step moves it per unit of its clipped fresh gradient.

    SGD: ``lr`` times momentum's share of the fresh gradient; Adam/AdamW: the
    step's preconditioner ``lr (1 - b1) / (1 - b1^t) / (sqrt(v_t / (1 - b2^t)) + eps)``.
    """
    flat = Flat(list(grads), opt)
    coef, _ = flat.coefficients(opt, flat.cat_dict(grads), clip)
    return flat.split(coef)
