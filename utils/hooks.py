"""Hookable small policy networks and the cache / patch helpers built on TransformerLens.

The pattern: subclass `HookedRootModule`, put a `HookPoint` after every activation you
may want to read or change, and call `self.setup()` at the end of `__init__`. Then
`run_with_cache`, `run_with_hooks` and every helper below work as they do for a
`HookedTransformer`.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError


class HookedMLPPolicy(HookedRootModule):
    """An actor-critic MLP whose every layer is hookable.

    Hook names: `hook_obs` (the input), `layers.{i}.hook_pre` (before the nonlinearity),
    `layers.{i}.hook_post` (after it: the "units" of layer i), `hook_logits` (action
    logits) and `hook_value` (the critic's value, shape [batch]).
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), value_head: bool = True):
        super().__init__()
        if obs_dim <= 0 or n_actions <= 0 or any(h <= 0 for h in hidden):
            raise CourseError(f"HookedMLPPolicy needs positive sizes, got obs_dim={obs_dim}, n_actions={n_actions}, hidden={tuple(hidden)}")
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, tuple(hidden)
        self.hook_obs = HookPoint()
        self.layers = nn.ModuleList()
        d = obs_dim
        for h in hidden:
            self.layers.append(_HookedLayer(d, h))
            d = h
        self.actor = nn.Linear(d, n_actions)
        self.critic = nn.Linear(d, 1) if value_head else None
        self.hook_logits = HookPoint()
        self.hook_value = HookPoint()
        self.setup()

    def forward(self, obs: Tensor) -> Tensor:
        """Action logits [batch, n_actions] for observations [batch, obs_dim]."""
        return self.forward_both(obs)[0]

    def forward_both(self, obs: Tensor) -> tuple[Tensor, Tensor | None]:
        if obs.ndim != 2 or obs.shape[-1] != self.obs_dim:
            raise CourseError(f"observations must have shape [batch, {self.obs_dim}], got {tuple(obs.shape)}")
        x = self.hook_obs(obs.float())
        for layer in self.layers:
            x = layer(x)
        logits = self.hook_logits(self.actor(x))
        value = self.hook_value(self.critic(x).squeeze(-1)) if self.critic is not None else None
        return logits, value


class _HookedLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_post(torch.relu(self.hook_pre(self.linear(x))))


def _check_names(model: HookedRootModule, names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in model.hook_dict]
    if unknown:
        raise CourseError(f"unknown hook name(s) {unknown}: the model has {sorted(model.hook_dict)}")
    return names


@torch.no_grad()
def cache_activations(model: HookedRootModule, inputs: Tensor, names: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Run `model` on `inputs` and return {hook name: activation} for `names` (all hooks if None)."""
    names = _check_names(model, names) if names is not None else None
    _, cache = model.run_with_cache(inputs, names_filter=names)
    return {k: v.detach() for k, v in cache.items()}


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


def add_hook(direction: Tensor, scale: float = 1.0) -> Callable[[Tensor, HookPoint], Tensor]:
    """A hook function that adds `scale * direction` to the activation (steering)."""

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        return act + scale * direction.to(act.device, act.dtype)

    return hook


@torch.no_grad()
def run_patched(model: HookedRootModule, inputs: Tensor, hook_name: str, source: Tensor,
                index: Sequence[int] | Tensor | None = None) -> Tensor:
    """The model's output on `inputs` with `hook_name` overwritten by `source` (optionally only on `index`)."""
    _check_names(model, [hook_name])
    return model.run_with_hooks(inputs, fwd_hooks=[(hook_name, replace_hook(source, index))])


def logit_diff(logits: Tensor, a: int, b: int) -> Tensor:
    """logit[a] - logit[b] along the last dimension."""
    return logits[..., a] - logits[..., b]


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
                   metric: Callable[[Tensor], Tensor], per_unit: bool = False) -> dict[str, Tensor]:
    """Activation patching from the clean run into the corrupt run.

    For each hook (and, with `per_unit`, each unit of its last dimension), run `corrupt`
    with that activation taken from `clean`, and return the fraction of the metric gap
    recovered: {hook name: tensor of shape [] or [n_units]}.
    """
    names = _check_names(model, hook_names)
    if clean.shape != corrupt.shape:
        raise CourseError(f"clean and corrupt inputs differ in shape: {tuple(clean.shape)} vs {tuple(corrupt.shape)}")
    clean_cache = cache_activations(model, clean, names)
    m_clean, m_corrupt = metric(model(clean)), metric(model(corrupt))
    out: dict[str, Tensor] = {}
    for name in names:
        act = clean_cache[name]
        if not per_unit:
            out[name] = torch.tensor(fraction_recovered(metric(run_patched(model, corrupt, name, act)), m_clean, m_corrupt))
        else:
            out[name] = torch.tensor([
                fraction_recovered(metric(run_patched(model, corrupt, name, act, [u])), m_clean, m_corrupt)
                for u in range(act.shape[-1])
            ])
    return out
