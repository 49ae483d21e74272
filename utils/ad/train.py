"""Training the AD model: next-action cross-entropy on windows of learning histories."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from utils.ad.data import sample_windows
from utils.core import CourseError, check_fields
from utils.models.ad_transformer import ADTransformer


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 50
    context_episodes: int = 4
    episode_len: int = 20
    seed: int = 0

    def validate(self) -> None:
        check_fields(self, positive_int=("steps", "batch_size", "context_episodes", "episode_len"), positive=("lr",),
                     nonneg=("weight_decay",), nonneg_int=("warmup", "seed"))


def ad_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of the action taken at every step: logits [B, T, A] at token t
    predict targets [B, T] at the same t (token t already holds o_t, and a_t is not in it)."""
    if logits.ndim != 3 or logits.shape[:2] != targets.shape:
        raise CourseError(f"ad_loss needs logits [B, T, A] and targets [B, T], got {tuple(logits.shape)} and {tuple(targets.shape)}")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long())


def train_ad(model: ADTransformer, tokens: Tensor, targets: Tensor, cfg: TrainConfig, desc: str = "training AD",
             progress: bool = True, loss_fn=None) -> dict[str, list[float]]:
    """Train `model` on random windows of `cfg.context_episodes` episodes from (tokens, targets)
    [n, E * L, 3] / [n, E * L]. Returns the log {'step', 'loss', 'seconds'}.
    loss_fn(logits, targets): default `ad_loss` (the notebook passes the learner's)."""
    loss_fn = ad_loss if loss_fn is None else loss_fn
    cfg.validate()
    if cfg.context_episodes * cfg.episode_len > model.cfg.n_ctx:
        raise CourseError(f"context of {cfg.context_episodes} x {cfg.episode_len} tokens exceeds the model's context_len {model.cfg.n_ctx}")
    if tokens.shape[:2] != targets.shape:
        raise CourseError(f"tokens {tuple(tokens.shape)} and targets {tuple(targets.shape)} disagree")
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    device = next(model.parameters()).device
    log: dict[str, list[float]] = {"step": [], "loss": [], "seconds": []}
    t0, running = time.perf_counter(), None
    model.train()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=2.0)
    for step in bar:
        x, y = sample_windows(tokens, targets, cfg.episode_len, cfg.context_episodes, cfg.batch_size, g)
        loss = loss_fn(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 10 == 0 or step == cfg.steps - 1:
            log["step"].append(step)
            log["loss"].append(running)
            log["seconds"].append(time.perf_counter() - t0)
            bar.set_postfix(loss=f"{running:.3f}")
    model.eval()
    return log
