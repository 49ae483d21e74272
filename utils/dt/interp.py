"""Interpretability helpers for decision transformers (references of the chapter's exercises).

Positions: step t of a trajectory has its RTG at 3t, its state at 3t + 1 (where a_t is
predicted) and its action at 3t + 2 (`utils.models.decision_transformer`)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from utils.core import CourseError
from utils.interp.patching import fraction_recovered


def attention_to_keys(pattern: Tensor, keys: Tensor, queries: Tensor) -> Tensor:
    """Mean attention mass per head [H] that the chosen queries put on the chosen keys.

    pattern [B, H, Q, K]; keys [B, Q, K] bool (which keys count, per query); queries [B, Q]
    bool (which queries to average over). 0 for a head when no query is chosen."""
    if pattern.ndim != 4 or keys.shape != (pattern.shape[0], *pattern.shape[2:]) \
            or queries.shape != pattern.shape[:1] + pattern.shape[2:3]:
        raise CourseError(f"need pattern [B, H, Q, K], keys [B, Q, K], queries [B, Q]; got {tuple(pattern.shape)}, "
                          f"{tuple(keys.shape)}, {tuple(queries.shape)}")
    mass = (pattern * keys[:, None].to(pattern.dtype)).sum(-1)  # [B, H, Q]
    w = queries[:, None, :].to(pattern.dtype)
    return (mass * w).sum((0, 2)) / w.sum((0, 2)).clamp_min(1)


def key_masks(query_steps: Tensor) -> dict[str, Tensor]:
    """Masks for `attention_to_keys` from the steps whose STATE position is a query
    (query_steps [n, T] bool): 'queries' [n, 3T], and key masks [n, 3T, 3T] for 'rtg' (the
    RTG token of the query's own step), 'cue' (the first state token) and 'state' (the query
    itself); plus 'chance' [n, 3T]: the mass a uniform causal head puts on one key."""
    n, t = query_steps.shape
    p = 3 * t
    queries = torch.zeros(n, p, dtype=torch.bool)
    queries[:, 1::3] = query_steps.bool()
    qpos = torch.arange(p)
    out = {"queries": queries, "chance": (1.0 / (qpos + 1)).expand(n, p)}
    for name, key in (("rtg", qpos - 1), ("cue", torch.ones(p, dtype=torch.long)), ("state", qpos)):
        m = torch.zeros(p, p, dtype=torch.bool)
        ok = key >= 0
        m[qpos[ok], key[ok]] = True
        out[name] = m.expand(n, p, p) & queries[:, :, None]
    return out


@torch.no_grad()
def head_patching(model, clean: Tensor, corrupt: Tensor, metric: Callable[[Tensor], Tensor]) -> Tensor:
    """Fraction of metric(clean) - metric(corrupt) recovered when ONE head's output (its
    `hook_z`, all positions) is taken from the clean run into the corrupt run: [n_layers, n_heads]."""
    if clean.shape != corrupt.shape:
        raise CourseError(f"clean and corrupt differ in shape: {tuple(clean.shape)} vs {tuple(corrupt.shape)}")
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_z"))
    m_clean, m_corrupt = metric(model(clean)), metric(model(corrupt))
    c = model.cfg
    out = torch.zeros(c.n_layers, c.n_heads)
    for layer in range(c.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        for h in range(c.n_heads):
            def hook(z, hook, h=h, name=name):
                z = z.clone()
                z[:, :, h] = cache[name][:, :, h]
                return z
            patched = model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])
            out[layer, h] = fraction_recovered(metric(patched), m_clean, m_corrupt)
    return out


def head_dla(z: Tensor, W_O: Tensor, ln_scale: Tensor, W_U: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Direct logit attribution of each head to logit[a] - logit[b] at one position.

    z [B, H, d_head] (a layer's hook_z at the query), W_O [H, d_head, d_model], ln_scale [B, 1]
    (ln_final.hook_scale at the query), W_U [d_model, A], a, b [B]. Returns [B, H]: what each
    head's output, divided by the final LayerNorm's scale, adds to the logit difference."""
    if z.ndim != 3 or W_O.shape[:2] != z.shape[1:] or ln_scale.shape != (z.shape[0], 1):
        raise CourseError(f"need z [B, H, d_head], W_O [H, d_head, d], ln_scale [B, 1]; got {tuple(z.shape)}, "
                          f"{tuple(W_O.shape)}, {tuple(ln_scale.shape)}")
    out = torch.einsum("bhe,hed->bhd", z, W_O) / ln_scale[:, :, None]  # [B, H, d]
    direction = (W_U[:, a] - W_U[:, b]).T  # [B, d]
    return torch.einsum("bhd,bd->bh", out, direction)


def steer_at(direction: Tensor, scale: float, positions: Sequence[int] | Tensor):
    """A hook(act [B, P, d], hook) adding scale * direction at the chosen positions only
    (a new tensor; positions may be negative)."""
    pos = torch.as_tensor(positions, dtype=torch.long).reshape(-1)

    def hook(act: Tensor, hook=None) -> Tensor:
        add = torch.zeros_like(act)
        add[:, pos] = scale * direction.to(act.dtype)
        return act + add

    return hook


def ablate_heads(heads: Sequence[tuple[int, int]], layer: int, mean_z: Tensor):
    """A hook on blocks.{layer}.attn.hook_z [B, P, H, d_head] replacing the output of each head
    (layer, h) in `heads` by its mean `mean_z` [P, H, d_head] (mean ablation); other layers' heads
    in `heads` are ignored. Returns a new tensor."""
    idx = [h for (l, h) in heads if l == layer]

    def hook(z: Tensor, hook=None) -> Tensor:
        z = z.clone()
        if idx:
            z[:, :, idx] = mean_z[: z.shape[1], idx].to(z.dtype)
        return z

    return hook


@torch.no_grad()
def patch_heads(model, clean: Tensor, corrupt: Tensor, heads: Sequence[tuple[int, int]],
                metric: Callable[[Tensor], Tensor], per_pair: bool = False):
    """Patch SEVERAL heads (hook_z, every position) from clean into corrupt together.
    Returns the fraction of the metric gap recovered, or with `per_pair` the three per-pair
    metric tensors (patched, clean, corrupt) for `utils.stats.fraction_recovered_ci`."""
    heads = [tuple(h) for h in heads]
    layers = sorted({l for l, _ in heads})
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_z"))
    hooks = []
    for layer in layers:
        idx = [h for l, h in heads if l == layer]
        name = f"blocks.{layer}.attn.hook_z"

        def hook(z, hook, idx=idx, name=name):
            z = z.clone()
            z[:, :, idx] = cache[name][:, :, idx]
            return z
        hooks.append((name, hook))
    patched = metric(model.run_with_hooks(corrupt, fwd_hooks=hooks))
    m_clean, m_corrupt = metric(model(clean)), metric(model(corrupt))
    if per_pair:
        return patched, m_clean, m_corrupt
    return fraction_recovered(patched, m_clean, m_corrupt)


@torch.no_grad()
def mean_z(model, tokens: Tensor) -> dict[int, Tensor]:
    """{layer: mean of hook_z over the batch [P, H, d_head]}: the values of mean ablation."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    return {l: cache[f"blocks.{l}.attn.hook_z"].mean(0) for l in range(model.cfg.n_layers)}


def ablation_hooks(heads: Sequence[tuple[int, int]], means: dict[int, Tensor], make_hook=None) -> list:
    """fwd_hooks mean-ablating `heads` (built with `make_hook(heads, layer, mean_z)`, default
    `ablate_heads`)."""
    make_hook = make_hook or ablate_heads
    return [(f"blocks.{l}.attn.hook_z", make_hook(list(heads), l, means[l])) for l in sorted({l for l, _ in heads})]


def all_heads(model) -> list[tuple[int, int]]:
    return [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
