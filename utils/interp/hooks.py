"""Reading activations: hook-name checks and caching (TransformerLens `run_with_cache`)."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor
from transformer_lens import HookedRootModule

from utils.core import CourseError


def check_names(model: HookedRootModule, names: Iterable[str]) -> list[str]:
    """The hook names as a list; a one-line CourseError naming the model's hooks if one is unknown."""
    names = list(names)
    unknown = [n for n in names if n not in model.hook_dict]
    if unknown:
        raise CourseError(f"unknown hook name(s) {unknown}: the model has {sorted(model.hook_dict)}")
    return names


@torch.no_grad()
def cache_activations(model: HookedRootModule, inputs: Tensor, names: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Run `model` on `inputs` and return {hook name: activation} for `names` (all hooks if None)."""
    names = check_names(model, names) if names is not None else None
    _, cache = model.run_with_cache(inputs, names_filter=names)
    return {k: v.detach() for k, v in cache.items()}


def hidden_units(model: HookedRootModule, obs: Tensor, layer: int) -> Tensor:
    """The post-nonlinearity activations `layers.{layer}.hook_post` [batch, d_hidden] of an MLP
    policy (`HookedMLPPolicy`) for observations `obs` [batch, obs_dim]."""
    name = f"layers.{layer}.hook_post"
    return cache_activations(model, obs, [name])[name]
