"""The decision-transformer loss and training loop."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError, check_fields


def dt_loss(logits: Tensor, actions: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy of the action logits [B, T, A] (read at the state positions) against
    the actions taken [B, T], over the real steps of `mask` [B, T] only; 0 (with a gradient)
    when the mask is empty."""
    m = mask.bool()
    if not m.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[m], actions[m].long())


@dataclass
class DTTrainConfig:
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def validate(self) -> None:
        check_fields(self, positive_int=("steps", "batch_size"), positive=("lr",), nonneg_int=("seed",))


def train_dt(model, tokens: Tensor, mask: Tensor, cfg: DTTrainConfig, desc: str = "training DT",
             loss_fn=dt_loss) -> list[float]:
    """Train on random minibatches of whole trajectories; returns the loss per step."""
    cfg.validate()
    if tokens.ndim != 3 or mask.shape != tokens.shape[:2]:
        raise CourseError(f"need tokens [N, T, 3] and mask [N, T], got {tuple(tokens.shape)} and {tuple(mask.shape)}")
    if tokens.shape[1] > model.dt_cfg.context_len:
        raise CourseError(f"trajectories of {tokens.shape[1]} steps are longer than the model's context_len "
                          f"{model.dt_cfg.context_len}")
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (1 - s / (cfg.steps + 1)))
    # the fused, hook-free path of the same function when the model has one (DecisionTransformer:
    # `fast_action_logits`, checked against the hooked forward in tests/test_dt.py)
    logits_fn = getattr(model, "fast_action_logits", model.action_logits)
    model.train()
    losses = []
    for _ in tqdm(range(cfg.steps), desc=desc, leave=False, mininterval=2):
        idx = torch.randint(0, len(tokens), (cfg.batch_size,), generator=g)
        batch = tokens[idx]
        loss = loss_fn(logits_fn(batch), batch[..., 2], mask[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses
