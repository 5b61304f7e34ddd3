"""Local differential privacy for a federated client: DP-SGD with Opacus.

With ``federated.privacy.mode: local`` each client trains its round with
DP-SGD (``dp_sgd_train``) instead of the plain Trainer: every step draws a
Poisson sample of the client's rows, computes each row's gradient, clips it
to ``max_grad_norm``, sums, adds Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` and divides by the expected batch size.

Why local rather than central: central DP (Flower's wrapper) noises the
aggregate on the server, so the client must trust the server with its raw
update. Here the noise is added on the client, before anything leaves it, so
the update it sends, and every model derived from it, is already private.

The guarantee: example-level (epsilon, delta)-DP for each client's own rows,
per client. Adding or removing one row of a client's training data changes
the distribution of everything that client sends, over all its rounds, by at
most ``epsilon`` at ``delta`` (Opacus's RDP accountant, composed over every
round the client took part in, from the history it keeps between rounds).
It bounds what one *row* reveals, not what a whole client's data set
reveals, and it covers the gradient steps only: the input statistics the
federation pools before round 1 (``task.client_stats``) are not noised.

>>> from glassbox.config import PrivacyConfig, load_recipe
>>> from glassbox.nn import build_model
>>> from glassbox.pipeline import prepare_data
>>> r = load_recipe(None, ["data.source=iris", "model.dim=16", "model.depth=1", "train.epochs=1",
...                      "train.batch_size=64"])
>>> d = prepare_data(r); model = build_model(r.model, d["train"]); priv = PrivacyConfig(mode="local")
>>> state, steps, loss, history, eps = dp_sgd_train(model, r.train, d["train"], priv, seed=0, history=[])
>>> sorted(state) == sorted(model.state_dict()), steps, history == [[1.0, 64 / len(d["train"]), 1]]
(True, 1, True)
>>> _, _, _, history, eps2 = dp_sgd_train(model, r.train, d["train"], priv, seed=1, history=history)
>>> history[0][2], eps2 > eps > 0
(2, True)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from opacus.accountants import RDPAccountant
from opacus.grad_sample import GradSampleModule, register_grad_sampler
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from glassbox.config import PrivacyConfig, TrainConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.federated.updates import strip_prefix
from glassbox.valuation.rules import RULES, Call

# -- per-example gradients of glassbox's own layers -----------------------------------------------
#
# Opacus computes per-example gradients with a sampler per layer type; a module with
# parameters of its own and no sampler falls back to functorch, which refuses any
# module with buffers and passes only the first input. The tokenizers hold their input
# statistics as buffers next to their own parameters (CLS token, feature and position
# tables), and gla's and deltanet's per-head norms take two inputs, so neither works.
# glassbox already has exact closed forms for these layers (the valuation rules,
# checked against torch.func by tests/valuation/test_rules.py); each is registered
# with Opacus here. A registered type also makes Opacus recurse into its children, so
# the image tokenizer's conv stem and patch convolution keep Opacus's own samplers.


def _rule_sampler(
    layer: nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    # A rule covers only the layer's direct parameters, as an Opacus sampler must:
    # the children's gradients come from their own hooks.
    grads = RULES[type(layer)].per_example(Call(layer, tuple(activations), backprops), slice(None))
    own = dict(layer.named_parameters(recurse=False))
    return {own[k]: g for k, g in grads.items() if own[k].requires_grad}


register_grad_sampler([cls for cls in RULES if cls not in GradSampleModule.GRAD_SAMPLERS])(_rule_sampler)


# -- DP-SGD ---------------------------------------------------------------------------------------


def _seeds(seed: int, n: int) -> list[int]:
    # Independent streams (dropout, sampling, noise) from one seed, however large it is.
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n, np.uint64)]


def _optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    # As the Trainer builds it: weight decay and momentum act on the noised
    # gradient, post-processing that costs no privacy.
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def epsilon(history: list, delta: float) -> float:
    """Cumulative epsilon at ``delta`` of an accountant history ``[[sigma, q, steps], ...]``.

    >>> epsilon([], 1e-5)
    0.0
    """
    accountant = RDPAccountant()
    accountant.history = [(float(s), float(q), int(k)) for s, q, k in history]
    return float(accountant.get_epsilon(delta)) if accountant.history else 0.0


def dp_sgd_train(
    model: nn.Module,
    cfg: TrainConfig,
    train: Dataset,
    priv: PrivacyConfig,
    *,
    seed: int,
    history: list,
) -> tuple[dict[str, torch.Tensor], int, float, list, float]:
    """One client's round of DP-SGD on ``train``; returns ``(state, steps, mean_loss, history, epsilon)``.

    ``model`` (already holding the global weights) is trained in place and
    left a plain module in eval mode, hooks removed. Each step samples every
    row independently with probability ``q = min(1, batch_size / n)`` (Poisson
    sampling, which the accountant's amplification assumes), for
    ``epochs * int(1 / q)`` steps (capped per epoch by ``max_steps_per_epoch``).
    The loss is the Trainer's unweighted cross-entropy; ``train.grad_clip`` and
    ``train.accumulate`` do not apply (every example is clipped to
    ``max_grad_norm`` instead). ``history`` is this client's accountant history
    from earlier rounds, JSON-able ``[[noise_multiplier, sample_rate, steps], ...]``;
    the returned one adds this round (merged into the last entry when sigma and
    rate are unchanged, as Opacus's accountant does), and ``epsilon`` is at
    ``priv.delta`` over all of it. The same ``seed`` gives the same result.
    """
    from glassbox.nn.models import take_penalty
    from glassbox.train.trainer import Trainer, _lr_lambda

    n = len(train)
    if n == 0:
        raise UserError("a client with no training rows cannot train; give every client some rows")
    task = train.task
    q = min(1.0, cfg.batch_size / n)
    per_epoch = int(1 / q)  # Opacus's DPDataLoader length: one pass over the rows in expectation
    if cfg.max_steps_per_epoch is not None:
        per_epoch = min(per_epoch, cfg.max_steps_per_epoch)
    total = per_epoch * cfg.epochs
    # Class weights (train.class_weight: balanced) are ignored: they are computed
    # from all of the client's labels, so each row's clipped gradient would depend
    # on the other rows and the per-example sensitivity bound would no longer hold.
    trainer = Trainer(model, cfg)  # for its loss, so DP and plain clients optimise the same objective

    accountant = RDPAccountant()
    accountant.history = [(float(s), float(r), int(k)) for s, r, k in history]
    torch_seed, sample_seed, noise_seed = _seeds(seed, 3)
    params = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    # fork_rng: dropout is seeded for reproducibility without resetting the caller's global stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        # strict=False: Opacus's validator flags every trainable module with buffers,
        # meant for BatchNorm's running statistics learnt from the batch; the
        # tokenizers' mean/std are fixed during training, and their own parameters
        # have the samplers registered above.
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=False)
        try:
            base = _optimizer(params, cfg)
            # secure_mode (a CSPRNG, robust to floating-point attacks) cannot be
            # seeded; a glassbox run must replay exactly, so a seeded generator is used.
            optimizer = DPOptimizer(
                base,
                noise_multiplier=priv.noise_multiplier,
                max_grad_norm=priv.max_grad_norm,
                expected_batch_size=min(cfg.batch_size, n),  # q * n: Poisson batches vary in size
                loss_reduction="mean",
                generator=torch.Generator().manual_seed(noise_seed),
            )
            warm = round(cfg.warmup * total)
            scheduler = torch.optim.lr_scheduler.LambdaLR(base, _lr_lambda(total, warm, cfg.schedule))
            sampler = UniformWithReplacementSampler(
                num_samples=n,
                sample_rate=q,
                generator=torch.Generator().manual_seed(sample_seed),
                steps=total,
            )
            gsm.train()
            for step, rows in enumerate(sampler, start=1):
                optimizer.zero_grad(set_to_none=True)
                if rows:
                    idx = torch.as_tensor(rows, dtype=torch.long)
                    x, y = Trainer.inputs_targets(train.X[idx], train.y[idx], task)
                    per_row = trainer.loss_fn(gsm(x), y, task, reduction="none")
                    loss = (per_row + take_penalty(model, len(per_row))).mean()  # model.deep_penalty
                    if not torch.isfinite(loss):
                        raise UserError(
                            f"DP-SGD training loss became {loss.item()} at step {step}; lower train.lr"
                        )
                    with warnings.catch_warnings():
                        # The tokenizer's input needs no gradient, so its hook fires on the
                        # output's gradient: exactly the backprops its sampler needs.
                        warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
                        loss.backward()
                    losses.append(loss.item())
                else:
                    # An empty Poisson batch still takes a step of pure noise: skipping
                    # it would be a different mechanism from the one the accountant counts.
                    for p in params:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
                optimizer.step()
                scheduler.step()
                accountant.step(noise_multiplier=priv.noise_multiplier, sample_rate=q)
            state = {k: v.detach().clone() for k, v in strip_prefix(gsm.state_dict()).items()}
        finally:
            gsm.to_standard_module()
            _scrub(model)
    model.eval()
    new_history: list[Any] = [[float(s), float(r), int(k)] for s, r, k in accountant.history]
    mean_loss = float(np.mean(losses)) if losses else math.nan
    return state, total, mean_loss, new_history, epsilon(new_history, priv.delta)


def _scrub(model: nn.Module) -> None:
    """Remove what Opacus leaves behind after unwrapping, so the model can be wrapped again or copied."""
    for p in model.parameters():
        for attr in ("summed_grad", "grad_sample", "_forward_counter", "_current_grad_sample"):
            if hasattr(p, attr):
                delattr(p, attr)
        p.grad = None
    for m in model.modules():
        for attr in ("activations", "max_batch_len"):
            if attr in m.__dict__:
                delattr(m, attr)
