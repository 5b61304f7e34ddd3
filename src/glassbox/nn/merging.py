"""Token merging (ToMe): bipartite soft matching, after Bolya et al., ICLR 2023.

A block that merges ``r`` tokens hands ``r`` fewer to its MLP and to every
later block, so an encoder gets cheaper with depth without retraining. Tokens
alternate into sets A (even positions) and B (odd positions); each A token
finds its most similar B token by the cosine of a ``metric`` (the attention
keys averaged over heads: they already summarise what a token contains);
the ``r`` A tokens with the most similar partners are folded into them.
Merged tokens are averaged weighted by ``size``, the number of input tokens
each one stands for, and sizes add, so a merged token is exactly the mean of
what it absorbed. Matching is a discrete choice: no gradient flows through
``metric``, only through the averaged ``x``.

Written from the paper's description. Unlike the paper's code, the kept
tokens stay in their original order (a merged pair sits at its B token's
place), so the CLS token, which is never merged, stays at index 0.

>>> import torch
>>> x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [2.0, 2.5], [-1.0, 0.0]]])  # (B, N, C)
>>> y, size = bipartite_merge(x, metric=x, r=1)  # token 0 is CLS; a block passes the keys
>>> y[0].tolist(), size[0, :, 0].tolist()  # token 2 joined its near twin, token 3
([[1.0, 0.0], [0.0, 1.0], [2.0, 2.25], [-1.0, 0.0]], [1.0, 1.0, 2.0, 1.0])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def merge_count(n_tokens: int, r: int, protect_cls: bool = True) -> int:
    """How many of ``r`` merges ``n_tokens`` allow: one per A token (CLS excluded), and B must exist."""
    n_a, n_b = (n_tokens + 1) // 2, n_tokens // 2
    if n_b == 0:
        return 0
    return max(0, min(r, n_a - int(protect_cls)))


def match_tokens(metric: torch.Tensor, r: int, protect_cls: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tokens merge: ``(src, dst)``, each ``(B, r')`` positions in the sequence, ``r' <= r``.

    ``src[b, i]`` (an even position) is folded into ``dst[b, i]`` (an odd one).
    Ties go to the first best B token and, among equally good A tokens, to the
    earlier one, which is what the naive twin does too.
    """
    r = merge_count(metric.shape[1], r, protect_cls)
    if r == 0:
        none = torch.zeros(metric.shape[0], 0, dtype=torch.long, device=metric.device)
        return none, none
    with torch.no_grad():  # a discrete choice: no gradient through the metric
        m = F.normalize(metric, dim=-1)
        scores = m[:, ::2] @ m[:, 1::2].transpose(1, 2)  # (B, Na, Nb) cosine
        if protect_cls:
            scores[:, 0] = float("-inf")  # CLS is an A token that never finds a partner
        best, partner = scores.max(dim=-1)  # (B, Na); max returns the first maximum
        order = torch.sort(best, dim=-1, descending=True, stable=True).indices  # (B, Na)
        src_a = order[:, :r]  # (B, r) A indices
        dst_b = partner.gather(1, src_a)  # (B, r) B indices
    return 2 * src_a, 2 * dst_b + 1


def merge_matched(
    x: torch.Tensor, size: torch.Tensor | None, src: torch.Tensor, dst: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold tokens ``src`` into ``dst`` (from ``match_tokens``) by size-weighted mean; drop ``src``."""
    B, N, C = x.shape
    r = src.shape[1]
    if size is None:
        size = x.new_ones(B, N, 1)
    keep = torch.ones(B, N, dtype=torch.bool, device=x.device)
    keep.scatter_(1, src, False)
    dst_k = keep.cumsum(1).gather(1, dst) - 1  # (B, r): where each dst lands once compacted
    # Rows of the flattened (B * N, C) input and (B * (N - r), C) output:
    # index_select / index_add move whole rows, several times faster on the
    # CPU than gather / scatter with an index expanded over C.
    base = torch.arange(B, device=x.device)[:, None]
    kept_rows = keep.view(-1).nonzero()[:, 0]  # (B * (N - r),), ascending: original order
    src_rows = (src + base * N).view(-1)  # (B * r,)
    dst_rows = (dst_k + base * (N - r)).view(-1)
    flat_x, flat_size = x.reshape(B * N, C), size.reshape(B * N, 1)
    s_src = flat_size.index_select(0, src_rows)  # (B * r, 1)
    s_kept = flat_size.index_select(0, kept_rows)  # (B * (N - r), 1)
    new_size = s_kept.index_add(0, dst_rows, s_src)
    # Each token as its share of the merged mean: x * s / s_new is x itself
    # (s / s is exactly 1) for tokens nothing joined, so the kept tokens cost
    # one copy and one multiply, not a weighting and an unweighting.
    out = flat_x.index_select(0, kept_rows) * (s_kept / new_size)  # (B * (N - r), C)
    joining = flat_x.index_select(0, src_rows) * (s_src / new_size.index_select(0, dst_rows))  # (B * r, C)
    out.index_add_(0, dst_rows, joining)
    return out.view(B, N - r, C), new_size.view(B, N - r, 1)


def bipartite_merge(
    x: torch.Tensor,
    metric: torch.Tensor,
    r: int,
    size: torch.Tensor | None = None,
    protect_cls: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Merge up to ``r`` tokens of ``x`` ``(B, N, C)`` by ``metric`` ``(B, N, Cm)``.

    ``size`` ``(B, N, 1)`` counts the input tokens each token stands for;
    ``None`` means one each. Returns ``(x (B, N - r', C), size (B, N - r', 1))``
    with ``r' = merge_count(N, r, protect_cls)``; with nothing to merge, the
    inputs come back untouched (a ``None`` size stays ``None``).
    """
    if merge_count(x.shape[1], r, protect_cls) == 0:
        return x, size
    src, dst = match_tokens(metric, r, protect_cls)
    return merge_matched(x, size, src, dst)


# -- naive twin ----------------------------------------------------------------------


def naive_match_tokens(metric: torch.Tensor, r: int, protect_cls: bool = True) -> list[dict[int, int]]:
    """Per batch row, ``{src position: dst position}``, by explicit loops over tokens."""
    B, N, _ = metric.shape
    r = merge_count(N, r, protect_cls)
    out = []
    for b in range(B):
        unit = [metric[b, t] / metric[b, t].norm().clamp_min(1e-12) for t in range(N)]
        best, partner = [], []
        for i in range(0, N, 2):
            top, arg = float("-inf"), 1
            for j in range(1, N, 2):
                s = float(unit[i] @ unit[j])
                if s > top:  # strict: the first best partner wins ties
                    top, arg = s, j
            if protect_cls and i == 0:
                top = float("-inf")
            best.append(top)
            partner.append(arg)
        order = sorted(range(len(best)), key=lambda a: -best[a])  # stable: earlier A wins ties
        out.append({2 * a: partner[a] for a in order[:r]})
    return out


def naive_bipartite_merge(
    x: torch.Tensor,
    metric: torch.Tensor,
    r: int,
    size: torch.Tensor | None = None,
    protect_cls: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``bipartite_merge`` written out token by token: the definition it is held to."""
    B, N, _ = x.shape
    if size is None:
        size = x.new_ones(B, N, 1)
    rows, sizes = [], []
    for b, pairs in enumerate(naive_match_tokens(metric, r, protect_cls)):
        tokens, counts = [], []
        for t in range(N):
            if t in pairs:
                continue  # folded into its partner
            members = [t, *[s for s, d in pairs.items() if d == t]]
            total = sum(size[b, m] for m in members)
            tokens.append(sum(x[b, m] * size[b, m] for m in members) / total)
            counts.append(total)
        rows.append(torch.stack(tokens))
        sizes.append(torch.stack(counts))
    return torch.stack(rows), torch.stack(sizes)
