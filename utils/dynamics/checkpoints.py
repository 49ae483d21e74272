"""Checkpoints over training: a log-spaced schedule, a recorder for `train_ppo`'s callback,
and loading a checkpoint back into a network of the same architecture.

    result, ckpts = train_with_checkpoints(PPOConfig(seed=0), n_checkpoints=12)
    models = load_checkpoints(ckpts, result.policy)     # one network per checkpoint

Log spacing puts most checkpoints early, where representations change fastest; checkpoint 0
is the network at initialisation (the random-init control of every metric).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from utils.core import CourseError
from utils.dynamics.metrics import effective_rank
from utils.rl.ppo import PPOConfig, PPOResult, train_ppo


def log_spaced_checkpoints(n_updates: int, n: int) -> list[int]:
    """Sorted, distinct update counts in [0, n_updates] at which to save the network: 0 (the
    initial network), n_updates (the final one) and n - 2 points log-spaced in between (rounded
    to ints; duplicates merged, so short runs get fewer than n)."""
    if not isinstance(n_updates, (int, np.integer)) or n_updates < 1:
        raise CourseError(f"n_updates must be a positive int, got {n_updates!r}")
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise CourseError(f"n (checkpoints) must be an int >= 2 (the first and the last), got {n!r}")
    if n == 2:
        return [0, int(n_updates)]
    inner = np.geomspace(1, n_updates, n - 1)          # n - 1 points from 1 to n_updates, both included
    return [0] + sorted({int(round(x)) for x in inner} | {int(n_updates)})


@dataclass
class Checkpoint:
    n_updates: int
    env_steps: int
    state_dict: dict = field(repr=False)
    train_success: float = float("nan")   # success of the training episodes of the last update


class CheckpointRecorder:
    """A `train_ppo` callback that copies the network's weights at the scheduled update counts."""

    def __init__(self, schedule: Sequence[int], batch_size: int):
        if not len(schedule):
            raise CourseError("the checkpoint schedule is empty: give at least one update count")
        self.schedule, self.batch_size = set(int(s) for s in schedule), int(batch_size)
        self.checkpoints: list[Checkpoint] = []

    def __call__(self, n_updates: int, policy: nn.Module, log: dict) -> None:
        if n_updates in self.schedule:
            succ = log["success"][-1] if log.get("success") else float("nan")
            state = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
            self.checkpoints.append(Checkpoint(n_updates, n_updates * self.batch_size, state, float(succ)))


def train_with_checkpoints(cfg: PPOConfig, n_checkpoints: int, policy: nn.Module | None = None,
                           progress: bool = True) -> tuple[PPOResult, list[Checkpoint]]:
    """`train_ppo(cfg)` with the network saved at `log_spaced_checkpoints(cfg.n_iterations,
    n_checkpoints)`. The training run is the same as without checkpoints (same seed, same numbers)."""
    cfg.validate()
    rec = CheckpointRecorder(log_spaced_checkpoints(cfg.n_iterations, n_checkpoints), cfg.batch_size)
    result = train_ppo(cfg, policy=policy, progress=progress, callback=rec)
    return result, rec.checkpoints


def load_checkpoint(ckpt: Checkpoint | dict, template: nn.Module) -> nn.Module:
    """A copy of `template` (any network of the right architecture) holding the checkpoint's
    weights, in eval mode. A checkpoint from another architecture is a one-line CourseError."""
    state = ckpt.state_dict if isinstance(ckpt, Checkpoint) else ckpt
    if not isinstance(state, dict) or not state:
        raise CourseError("the checkpoint holds no weights (empty state dict)")
    want = template.state_dict()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    wrong = [k for k in set(want) & set(state) if tuple(want[k].shape) != tuple(state[k].shape)]
    if missing or extra or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                  else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, not {tuple(want[wrong[0]].shape)}")
        raise CourseError(f"checkpoint from a different architecture than {type(template).__name__}"
                          f"{getattr(template, 'hidden', '')}: {detail}")
    model = copy.deepcopy(template)
    model.load_state_dict(state)
    return model.eval()


def load_checkpoints(ckpts: Sequence[Checkpoint], template: nn.Module) -> list[nn.Module]:
    """One network per checkpoint (see `load_checkpoint`); an empty list is a one-line error."""
    check_checkpoints(ckpts)
    return [load_checkpoint(c, template) for c in ckpts]


def check_checkpoints(ckpts: Sequence) -> None:
    if ckpts is None or len(ckpts) == 0:
        raise CourseError("the checkpoint list is empty: train with train_with_checkpoints(cfg, n_checkpoints >= 2)")


@torch.no_grad()
def weight_stats(model: nn.Module) -> dict[str, tuple[float, float]]:
    """{parameter name: (Frobenius norm, effective rank)} for every 2-D weight of the model."""
    return {k: (float(w.norm()), effective_rank(w)) for k, w in model.state_dict().items() if w.ndim == 2}
