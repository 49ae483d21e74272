"""Steering a frozen LM through SAE decoder directions, and checking that it stays frozen.

The one operation both Control RL and AutoSteer rely on:

    resid'[b, t] = resid[b, t] + c * W_dec[f[b, t]]      (f[b, t] = -1: no steering there)

It uses the decoder *direction* of feature f only. Decoding a one-hot through the SAE
(`sae.decode(c * onehot)`) would also add the decoder bias `b_dec`: a constant shift of
every steered position that has nothing to do with the chosen feature (the bug of the
public Control RL proof of concept). `steer_resid` is the reference; `feature_delta` is
the dense-strength version AutoSteer uses (several features at once, one strength each).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from utils.core import CourseError


def _check_sae(sae: Any) -> Tensor:
    W = getattr(sae, "W_dec", None)
    if not isinstance(W, Tensor) or W.ndim != 2:
        raise CourseError("the SAE must have a 2-D decoder matrix W_dec [d_sae, d_model] (a sae_lens SAE has one)")
    return W


def steer_resid(resid: Tensor, sae: Any, features: Tensor, coef: float | Tensor) -> Tensor:
    """resid [B, T, d] + coef * W_dec[features] at every position where features [B, T] >= 0.

    `coef` is a float or a tensor broadcastable to [B, T]. Decoder direction only (no b_dec);
    positions with feature -1 are left exactly as they were."""
    W = _check_sae(sae)
    if resid.ndim != 3 or resid.shape[-1] != W.shape[1]:
        raise CourseError(f"resid must be [B, T, d_model={W.shape[1]}], got {tuple(resid.shape)}")
    if tuple(features.shape) != tuple(resid.shape[:2]):
        raise CourseError(f"features must be [B, T] = {tuple(resid.shape[:2])}, got {tuple(features.shape)}")
    if features.numel() and int(features.max()) >= W.shape[0]:
        raise CourseError(f"feature index {int(features.max())} is outside the dictionary (d_sae={W.shape[0]})")
    features = features.to(resid.device)
    on = features >= 0
    direction = W.detach().to(resid.device)[features.clamp(min=0)].to(resid.dtype)   # [B, T, d]
    c = torch.as_tensor(coef, dtype=resid.dtype, device=resid.device)
    if c.ndim == 2:
        c = c[..., None]
    return resid + torch.where(on[..., None], c * direction, torch.zeros_like(direction))


def feature_delta(sae: Any, features: Tensor, strengths: Tensor) -> Tensor:
    """sum_i strengths[b, i] * W_dec[features[i]]: [B, d] (AutoSteer's multi-feature steering vector)."""
    W = _check_sae(sae).detach()
    if strengths.ndim != 2 or strengths.shape[1] != len(features):
        raise CourseError(f"strengths must be [B, {len(features)}] (one per steered feature), got {tuple(strengths.shape)}")
    return strengths.to(device=W.device, dtype=W.dtype) @ W[features.to(W.device)]


_EXACT_NUMEL = 1 << 20     # tensors up to this size are copied; larger ones are digested


def _digest(v: Tensor, chunk: int = 1 << 22) -> Tensor:
    """float64 [sum, sum of squares, position-weighted sum] of a large tensor, chunk by chunk (a
    32 MB temporary at most), plus a strided sample of its values: any change to the tensor that
    a steering bug could make (an in-place add, a scaled or overwritten row) changes it."""
    flat = v.detach().reshape(-1)
    acc = torch.zeros(3, dtype=torch.float64, device=flat.device)
    for start in range(0, flat.numel(), chunk):
        x = flat[start:start + chunk].double()
        w = (torch.arange(start, start + x.numel(), device=x.device) % 1009 + 1).double()
        acc += torch.stack([x.sum(), (x * x).sum(), (x * w).sum()])
    step = max(1, flat.numel() // 4096)
    return torch.cat([acc, flat[::step].double()])


def weight_fingerprint(model: torch.nn.Module) -> dict[str, Tensor]:
    """A fingerprint of every parameter and buffer, to prove later that steering changed none of
    them: small tensors are copied, large ones (over 2^20 values) digested (`_digest`), so that
    fingerprinting Gemma-2-2B costs kilobytes instead of a second copy of its 5 GB of weights."""
    return {k: v.detach().clone() if v.numel() <= _EXACT_NUMEL else _digest(v)
            for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, fingerprint: dict[str, Tensor]) -> None:
    """Raise AssertionError naming the first parameter that differs from the fingerprint."""
    now = model.state_dict()
    if set(now) != set(fingerprint):
        raise AssertionError("the model's parameter names changed")
    for k, v in fingerprint.items():
        cur = now[k] if now[k].numel() <= _EXACT_NUMEL else _digest(now[k])
        if cur.shape != v.shape or not torch.equal(cur, v):
            raise AssertionError(f"the LM's weights changed: {k}")

