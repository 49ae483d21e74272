"""Logit differences and direct logit attribution."""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError


def logit_diff(logits: Tensor, a: int | Tensor, b: int | Tensor) -> Tensor:
    """logit[a] - logit[b] along the last dimension, one value per row.

    `a` and `b` are action indices: ints (the same pair for every row) or long tensors with
    one index per row (`logits` [batch, n_actions], `a`, `b` [batch])."""
    if isinstance(a, int) and isinstance(b, int):
        return logits[..., a] - logits[..., b]
    a, b = torch.as_tensor(a, dtype=torch.long), torch.as_tensor(b, dtype=torch.long)
    if logits.ndim != 2 or a.shape != (len(logits),) or b.shape != (len(logits),):
        raise CourseError(f"per-row indices need logits [batch, n] and a, b [batch]; got {tuple(logits.shape)}, "
                          f"{tuple(a.shape)}, {tuple(b.shape)}")
    return (logits.gather(-1, a[:, None]) - logits.gather(-1, b[:, None])).squeeze(-1)


def direct_logit_attribution(h: Tensor, W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Contribution of each unit of the last hidden layer to logit[a] - logit[b]:
    h[i, u] * (W[a_i, u] - W[b_i, u]). h: [batch, d], W: the actor's weight [n_actions, d],
    a, b: [batch] action indices. Returns [batch, d]; summed over units it is the logit
    difference minus the bias difference."""
    if h.ndim != 2 or W.ndim != 2 or h.shape[1] != W.shape[1]:
        raise CourseError(f"need h [batch, d] and W [n_actions, d], got {tuple(h.shape)} and {tuple(W.shape)}")
    return h * (W[a] - W[b])
