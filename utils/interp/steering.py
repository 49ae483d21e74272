"""Steering: add a direction to an activation, and the directions (with their controls)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError


def add_hook(direction: Tensor, scale: float = 1.0) -> Callable[[Tensor, HookPoint], Tensor]:
    """A hook function that adds `scale * direction` to the activation (steering). `direction` is
    one vector [d] (or [1, d]) over the activation's last dimension, added at every position."""
    if not isinstance(direction, Tensor) or not (direction.ndim == 1 or (direction.ndim == 2 and direction.shape[0] == 1)):
        shape = tuple(direction.shape) if isinstance(direction, Tensor) else type(direction).__name__
        raise CourseError(f"a steering direction must be one vector [d] (or [1, d]), got {shape}")
    if not torch.isfinite(direction).all():
        raise CourseError("the steering direction contains NaN or inf")

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        if direction.shape[-1] != act.shape[-1]:
            raise CourseError(f"steering direction has {direction.shape[-1]} units but {hook.name} has {act.shape[-1]}")
        return act + scale * direction.to(act.device, act.dtype)

    return hook


def mean_difference(acts: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
    """mean(acts[mask_a]) - mean(acts[mask_b]): the activation difference between two groups."""
    mask_a, mask_b = torch.as_tensor(mask_a, dtype=torch.bool), torch.as_tensor(mask_b, dtype=torch.bool)
    if mask_a.shape != acts.shape[:1] or mask_b.shape != acts.shape[:1] or not mask_a.any() or not mask_b.any():
        raise CourseError(f"need two non-empty boolean masks of shape [{len(acts)}] over the activations")
    return acts[mask_a].mean(0) - acts[mask_b].mean(0)


def norm_matched_random(direction: Tensor, seed: int) -> Tensor:
    """A random direction with the same norm as `direction`: the control for a steering vector."""
    r = torch.randn(direction.shape, generator=torch.Generator().manual_seed(seed))
    return r / r.norm() * direction.norm()


@torch.no_grad()
def steering_effect(model, obs: Tensor, layer: str, direction: Tensor, scales, action: int,
                    seed: int = 0) -> dict[str, Tensor]:
    """How often the greedy action is `action` when `scale * direction` is added at `layer`, for
    each scale, beside the same for a norm-matched random direction (`norm_matched_random(
    direction, seed)`, the control). obs: [n, ...] observations; returns {"direction": [len(
    scales)], "random": [len(scales)]}, each a fraction of the n observations."""
    scales = [float(s) for s in scales]
    if not scales:
        raise CourseError("give at least one steering scale")
    rand = norm_matched_random(direction, seed)
    out = {}
    for name, d in (("direction", direction), ("random", rand)):
        rates = [(model.run_with_hooks(obs, fwd_hooks=[(layer, add_hook(d, s))]).argmax(-1) == action).float().mean()
                 for s in scales]
        out[name] = torch.stack(rates)
    return out


def direction_and_control(acts: Tensor, mask: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """(mean(acts[mask]) - mean(acts[~mask]), a random direction of the same norm): a
    mean-difference steering vector and its norm-matched control (`norm_matched_random`)."""
    mask = torch.as_tensor(mask, dtype=torch.bool)
    direction = mean_difference(acts, mask, ~mask)
    return direction, norm_matched_random(direction, seed)
