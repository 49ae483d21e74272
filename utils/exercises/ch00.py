"""Checks for chapter 00 (orientation)."""
from __future__ import annotations

import torch
from transformer_lens.hook_points import HookPoint

from utils.exercises import ExerciseFailed, check
from utils.interp.hooks import cache_activations
from utils.interp.patching import fraction_recovered, replace_hook
from utils.models.mlp_policy import HookedMLPPolicy


@check
def check_get_hidden(get_hidden) -> None:
    """get_hidden(policy, obs, layer) -> the post-ReLU activations of that layer."""
    torch.manual_seed(0)
    policy = HookedMLPPolicy(9, 2, (16, 8))
    obs = torch.randn(5, 9)
    for layer in (0, 1):
        name = f"layers.{layer}.hook_post"
        want = cache_activations(policy, obs, [name])[name]
        got = get_hidden(policy, obs, layer)
        if not isinstance(got, torch.Tensor):
            raise ExerciseFailed(f"get_hidden should return a tensor, got {type(got).__name__}")
        if got.shape != want.shape:
            raise ExerciseFailed(f"layer {layer}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
        if (got < 0).any():
            raise ExerciseFailed(f"layer {layer}: negative values; you returned the pre-activation (hook_pre), not the output of the ReLU (hook_post)")
        if not torch.allclose(got, want, atol=1e-6):
            raise ExerciseFailed(f"layer {layer}: values differ from layers.{layer}.hook_post; is the layer index right?")


@check
def check_patch_units_hook(patch_units_hook) -> None:
    """patch_units_hook(source, units) -> a hook that overwrites `units` of the activation with `source`."""
    torch.manual_seed(1)
    hp = HookPoint()
    hp.name = "layers.0.hook_post"
    act, src = torch.randn(4, 6), torch.randn(1, 6)
    for units in ([2], [0, 5], None):
        want = replace_hook(src, units)(act.clone(), hp)
        got = patch_units_hook(src, units)(act.clone(), hp)
        if got is None:
            raise ExerciseFailed("the hook must return the new activation (it returned None)")
        if got.shape != act.shape:
            raise ExerciseFailed(f"the hook changed the activation's shape from {tuple(act.shape)} to {tuple(got.shape)}")
        if not torch.allclose(got, want):
            which = "every unit" if units is None else f"units {units}"
            keep = "" if units is None else " and leave the others unchanged"
            raise ExerciseFailed(f"with units={units}: should copy the source into {which}{keep}, for every row of the batch")


@check
def check_fraction_recovered(fraction_recovered_fn) -> None:
    """fraction_recovered(patched, clean, corrupt) -> (patched - corrupt) / (clean - corrupt)."""
    cases = [(3.0, 5.0, 1.0), (1.0, 5.0, 1.0), (5.0, 5.0, 1.0), (-2.0, -4.0, 2.0), (0.0, 2.0, -2.0)]
    for patched, clean, corrupt in cases:
        want = fraction_recovered(patched, clean, corrupt)
        got = float(fraction_recovered_fn(torch.tensor(patched), torch.tensor(clean), torch.tensor(corrupt)))
        if abs(got - want) > 1e-5:
            raise ExerciseFailed(f"patched={patched}, clean={clean}, corrupt={corrupt}: expected {want:.3f}, got {got:.3f} "
                                 "(0 means the patch restored nothing, 1 means all of the clean-vs-corrupt gap)")


CHECKS = {
    "get_hidden": check_get_hidden,
    "patch_units_hook": check_patch_units_hook,
    "fraction_recovered": check_fraction_recovered,
}


def _pre_activation(policy, obs, layer):
    _, cache = policy.run_with_cache(obs)
    return cache[f"layers.{layer}.hook_pre"]


def _patch_all_units(source, units):
    return lambda act, hook: source.expand_as(act).clone()


def _ratio(patched, clean, corrupt):
    return patched / clean


def _no_corrupt_offset(patched, clean, corrupt):
    return (patched - corrupt) / clean


WRONG_ANSWERS = {
    "get_hidden": [_pre_activation],
    "patch_units_hook": [_patch_all_units],
    "fraction_recovered": [_ratio, _no_corrupt_offset],
}
