"""Activation patching: overwrite an activation with its value from another input.

`patching_sweep` is the one patching loop of the course (whole hooks or single units);
`heldout_unit_patching` chooses the top units on discovery pairs and measures them on
held-out test pairs, beside as many random units (the control).
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError
from utils.interp.attribution import logit_diff
from utils.interp.hooks import cache_activations, check_names
from utils.stats import fraction_recovered_ci

HookFactory = Callable[[Tensor, Sequence[int] | None], Callable[[Tensor, HookPoint], Tensor]]


def replace_hook(source: Tensor, index: Sequence[int] | Tensor | None = None) -> Callable[[Tensor, HookPoint], Tensor]:
    """A hook function that overwrites the activation with `source` (on units `index` of the
    last dimension, or everywhere if None). `source` broadcasts over the batch."""

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        src = source.to(act.device, act.dtype)
        if src.shape[-1] != act.shape[-1]:
            raise CourseError(f"patch source has {src.shape[-1]} units but {hook.name} has {act.shape[-1]}")
        act = act.clone()
        if index is None:
            act[...] = src.expand_as(act)
        else:
            idx = torch.as_tensor(index, dtype=torch.long, device=act.device)
            act[..., idx] = src.expand_as(act)[..., idx]
        return act

    return hook


def check_patch(model: HookedRootModule, inputs: Tensor, hook_name: str, source: Tensor,
                index: Sequence[int] | Tensor | None = None) -> None:
    """One-line CourseErrors, before any patched run, for a source or index that does not fit."""
    check_names(model, [hook_name])
    if not isinstance(source, Tensor) or source.ndim == 0:
        raise CourseError(f"the patch source must be a tensor with the activation's shape, got {type(source).__name__}")
    n = len(inputs)
    if source.ndim >= 2 and source.shape[0] not in (1, n):
        raise CourseError(f"the patch source has {source.shape[0]} rows but there are {n} inputs: give one row "
                          "(broadcast to every input) or one per input")
    act = cache_activations(model, inputs[:1], [hook_name])[hook_name]
    if source.shape[-1] != act.shape[-1] or (source.ndim >= 2 and source.shape[1:-1] != act.shape[1:-1]):
        raise CourseError(f"the patch source has shape {tuple(source.shape)} but {hook_name} has shape "
                          f"{(n, *act.shape[1:])}")
    if index is not None:
        idx = torch.as_tensor(index, dtype=torch.long)
        if idx.numel() and (idx.min() < 0 or idx.max() >= act.shape[-1]):
            raise CourseError(f"unit index out of range for {hook_name}, which has {act.shape[-1]} units: got {idx.tolist()}")


@torch.no_grad()
def run_patched(model: HookedRootModule, inputs: Tensor, hook_name: str, source: Tensor,
                index: Sequence[int] | Tensor | None = None) -> Tensor:
    """The model's output on `inputs` with `hook_name` overwritten by `source` (optionally only on `index`)."""
    check_patch(model, inputs, hook_name, source, index)
    return model.run_with_hooks(inputs, fwd_hooks=[(hook_name, replace_hook(source, index))])


def fraction_recovered(patched: Tensor | float, clean: Tensor | float, corrupt: Tensor | float) -> float:
    """How much of the clean-minus-corrupt metric gap a patch restores:
    (patched - corrupt) / (clean - corrupt). 1 = fully, 0 = not at all."""
    patched, clean, corrupt = (float(torch.as_tensor(x).float().mean()) for x in (patched, clean, corrupt))
    gap = clean - corrupt
    if abs(gap) < 1e-8:
        raise CourseError("clean and corrupt runs give the same metric: pick counterfactuals that change the output")
    return (patched - corrupt) / gap


@torch.no_grad()
def patching_sweep(model: HookedRootModule, clean: Tensor, corrupt: Tensor, hook_names: Iterable[str],
                   metric: Callable[[Tensor], Tensor], per_unit: bool = False, make_hook: HookFactory | None = None,
                   recovered: Callable = fraction_recovered) -> dict[str, Tensor]:
    """Activation patching from the clean run into the corrupt run.

    For each hook (and, with `per_unit`, each unit of its last dimension), run `corrupt`
    with that activation taken from `clean`, and return the fraction of the metric gap
    recovered: {hook name: tensor of shape [] or [n_units]}. `make_hook(source, units)`
    builds the patching hook (default `replace_hook`; pass your own to test it);
    `recovered(patched, clean, corrupt)` scores it (default `fraction_recovered`)."""
    names = check_names(model, hook_names)
    if clean.shape != corrupt.shape:
        raise CourseError(f"clean and corrupt inputs differ in shape: {tuple(clean.shape)} vs {tuple(corrupt.shape)}")
    make_hook = make_hook or replace_hook
    clean_cache = cache_activations(model, clean, names)
    m_clean, m_corrupt = metric(model(clean)), metric(model(corrupt))

    def score(name: str, units: Sequence[int] | None) -> float:
        patched = model.run_with_hooks(corrupt, fwd_hooks=[(name, make_hook(clean_cache[name], units))])
        return float(recovered(metric(patched), m_clean, m_corrupt))

    out: dict[str, Tensor] = {}
    for name in names:
        if per_unit:
            out[name] = torch.tensor([score(name, [u]) for u in range(clean_cache[name].shape[-1])])
        else:
            out[name] = torch.tensor(score(name, None))
    return out


def split_pairs(pairs: dict[str, Tensor], seed: int = 0) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(discovery, test): a random half/half split of counterfactual pairs (a dict of tensors
    with one row per pair), so units chosen on one half are measured on the other."""
    n = len(pairs["clean"])
    if n < 4:
        raise CourseError(f"need at least 4 pairs to split into discovery and test halves, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return ({k: v[perm[: n // 2]] for k, v in pairs.items()}, {k: v[perm[n // 2:]] for k, v in pairs.items()})


@torch.no_grad()
def heldout_unit_patching(model: HookedRootModule, pairs: dict[str, Tensor], layer: str, k: int = 16,
                          seed: int = 0) -> dict:
    """Single-unit scores on discovery pairs; the fraction of the per-pair logit difference
    logit[a_clean] - logit[a_corrupt] recovered on held-out test pairs by the top-k units and
    by k random units, each with a bootstrap CI over test pairs (a within-run interval).

    `pairs` holds clean, corrupt [n, ...] inputs and a_clean, a_corrupt [n] actions.
    Returns {"single": [d], "top": [k], "top_ci": (frac, lo, hi), "random_ci": (...)}."""
    disc, test = split_pairs(pairs, seed)
    ld = lambda p: lambda logits: logit_diff(logits, p["a_clean"], p["a_corrupt"])  # noqa: E731
    mean_ld = ld(disc)
    single = patching_sweep(model, disc["clean"], disc["corrupt"], [layer], lambda lg: mean_ld(lg).mean(),
                            per_unit=True)[layer]
    top = torch.argsort(single, descending=True)[:k]
    rand_units = torch.randperm(len(single), generator=torch.Generator().manual_seed(seed + 1))[:k]
    act = cache_activations(model, test["clean"], [layer])[layer]
    metric = ld(test)
    m_clean, m_corrupt = metric(model(test["clean"])), metric(model(test["corrupt"]))
    res = {"single": single, "top": top}
    for label, units in (("top", top), ("random", rand_units)):
        patched = metric(run_patched(model, test["corrupt"], layer, act, units.tolist()))
        res[label + "_ci"] = fraction_recovered_ci(patched, m_clean, m_corrupt, seed=seed)
    return res


def top_k_share(scores: Tensor, k: int) -> Tensor:
    """How concentrated per-unit scores are: the share of the total |score| held by the k units
    with the largest |score|, along the last dimension (scores [..., d] -> [...]).

    1 = all in k units; k / d = spread evenly. Scores may be negative (a unit can push the
    other way) or exceed 1, so magnitudes are used; the input is not modified."""
    scores = torch.as_tensor(scores)
    if scores.ndim == 0 or not 1 <= k <= scores.shape[-1]:
        raise CourseError(f"need scores [..., d] and 1 <= k <= d, got shape {tuple(scores.shape)} and k={k}")
    mag = scores.abs()
    total = mag.sum(-1)
    if (total == 0).any():
        raise CourseError("every score is zero in some row: there is nothing to share out")
    return mag.topk(k, dim=-1).values.sum(-1) / total


def patch_each_unit(model: HookedRootModule, clean: Tensor, corrupt: Tensor, hook_name: str,
                    metric: Callable[[Tensor], Tensor], make_hook: HookFactory | None = None) -> Tensor:
    """Fraction of the clean-vs-corrupt metric gap recovered by patching each unit of `hook_name`
    alone from the clean run into the corrupt run: a tensor [n_units] (`patching_sweep` with
    `per_unit=True` on one hook)."""
    return patching_sweep(model, clean, corrupt, [hook_name], metric, per_unit=True, make_hook=make_hook)[hook_name]
