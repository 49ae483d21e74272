"""Train chapter 08's agents (BFS-demonstration pretraining, then recurrent PPO) and ship them.

    python -m utils.planning.train            # DRC(2, 2) and its matched conv baseline, seeds 0 1 2
    python -m utils.planning.train --seeds 0 --kinds drc

Each agent: `pretrain` (behavioural cloning of optimal BFS solutions on 4,000 training rooms of
7 x 7 with two boxes), then `train_recurrent_ppo` (truncated BPTT) on the same rooms. During RL
the agent is scored on a validation split (its own seed stream, disjoint from the test split
the chapter reports on) every `val_every` iterations; the RL snapshot with the best validation
score is kept (never the pretrained one, so the shipped behaviour has been through RL). Saved
as data/ch08_{kind}_s{seed}.pt with the pretrained weights beside the final ones
(`load_agent(kind, seed, stage="bc")`), and a manifest entry (config, metrics, training
seconds and the load average of the machine at the time).
"""
from __future__ import annotations

import argparse
import copy
import fcntl
import tempfile
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.core import CourseError, set_seed
from utils.envs.sokoban import LevelBank, Sokoban
from utils.models.drc import DRC, agent_arch, build_agent, matched_baseline
from utils.planning.data import pretrain
from utils.planning.play import play
from utils.rl.recurrent_ppo import RecurrentPPOConfig, reset_state, train_recurrent_ppo

KINDS = ("drc", "conv")


@dataclass
class TrainConfig:
    size: int = 7
    n_boxes: int = 2
    min_moves: int = 6
    n_train_levels: int = 4000
    level_seed: int = 0
    channels: int = 16
    depth: int = 2
    ticks: int = 2
    hidden: int = 64
    bc_epochs: int = 20
    bc_batch: int = 16
    bc_lr: float = 1.5e-3
    ppo_steps: int = 98_304
    ppo_lr: float = 3e-5
    n_envs: int = 64
    max_steps: int = 40
    n_val_levels: int = 100
    val_every: int = 8          # PPO iterations (of n_envs * 32 steps) between validation scores


def train_bank(cfg: TrainConfig) -> LevelBank:
    return LevelBank(cfg.n_train_levels, "train", seed=cfg.level_seed, size=cfg.size, n_boxes=cfg.n_boxes,
                     min_moves=cfg.min_moves)


def heldout_bank(cfg: TrainConfig | None = None, n: int = 200, split: str = "test") -> LevelBank:
    """Held-out levels: the test split's seed stream (or "val", used only to pick the RL
    snapshot), both disjoint from training."""
    cfg = cfg or TrainConfig()
    return LevelBank(n, split, seed=cfg.level_seed, size=cfg.size, n_boxes=cfg.n_boxes, min_moves=cfg.min_moves)


def make_agent(kind: str, cfg: TrainConfig, seed: int = 0) -> nn.Module:
    """A freshly initialised agent (the random-init control when not trained)."""
    if kind not in KINDS:
        raise CourseError(f"unknown agent kind {kind!r}: use one of {KINDS}")
    set_seed(seed)
    drc = DRC((5, cfg.size, cfg.size), 5, cfg.channels, cfg.depth, cfg.ticks, cfg.hidden)
    if kind == "drc":
        return drc
    set_seed(seed)
    return matched_baseline(drc)


def train_agent(kind: str, seed: int, cfg: TrainConfig, bank: LevelBank | None = None, progress: bool = True,
                reset_fn=reset_state, val_bank: LevelBank | None = None):
    """(agent, metrics, bc_state): pretrain on BFS demonstrations, then fine-tune with recurrent
    PPO, keeping the RL snapshot that scores best on the validation split (`val_bank`, default
    `heldout_bank(cfg, cfg.n_val_levels, "val")`); `bc_state` is the state dict after
    pretraining. `reset_fn(state, starts)` is the state reset every unroll uses (the notebook
    passes the learner's)."""
    bank = bank or train_bank(cfg)
    val_bank = val_bank or heldout_bank(cfg, cfg.n_val_levels, "val")
    t0 = time.perf_counter()
    model = make_agent(kind, cfg, seed)
    bc = pretrain(model, bank, epochs=cfg.bc_epochs, batch=cfg.bc_batch, lr=cfg.bc_lr, seed=seed, progress=progress,
                  reset_fn=reset_fn)
    t_bc = time.perf_counter() - t0
    bc_state = copy.deepcopy(model.state_dict())
    held_out = heldout_bank(cfg, 100)
    solved_bc = play(model, held_out, max_steps=cfg.max_steps).solve_rate
    val_curve: list[tuple[int, float]] = [(0, play(model, val_bank, max_steps=cfg.max_steps).solve_rate)]
    best = {"score": -1.0, "state": None, "steps": 0}
    ppo_cfg = RecurrentPPOConfig(total_steps=cfg.ppo_steps, n_envs=cfg.n_envs, lr=cfg.ppo_lr, seed=seed)

    def validate(it, m, log):
        if it == 0 or (it % cfg.val_every and it != ppo_cfg.n_iterations):
            return
        score = play(m, val_bank, max_steps=cfg.max_steps).solve_rate
        val_curve.append((it * ppo_cfg.batch_size, score))
        if score > best["score"]:      # the first RL snapshot is always kept, ties keep the earlier
            best.update(score=score, state=copy.deepcopy(m.state_dict()), steps=it * ppo_cfg.batch_size)

    env = Sokoban(cfg.n_envs, bank, max_steps=cfg.max_steps, seed=seed)
    ppo = train_recurrent_ppo(ppo_cfg, model, env, progress=progress, reset_fn=reset_fn, callback=validate)
    model.load_state_dict(best["state"])
    succ = [s for s in ppo.log["success"] if s == s]
    t_train = time.perf_counter() - t0
    metrics = {"bc_final_loss": round(bc[-1], 4), "ppo_last_train_success": round(succ[-1], 3) if succ else None,
               "heldout100_solved_after_bc": solved_bc,
               "heldout100_solved_final": play(model, held_out, max_steps=cfg.max_steps).solve_rate,
               "val_curve": val_curve, "kept_rl_steps": best["steps"], "kept_val_score": best["score"],
               "bc_seconds": round(t_bc, 1), "train_seconds": round(t_train, 1),
               "load_average": round(os.getloadavg()[0], 2)}
    return model.eval(), metrics, bc_state


def save_agent(model: nn.Module, kind: str, seed: int, cfg: TrainConfig, metrics: dict, bc_state: dict | None = None) -> dict:
    state = {"arch": agent_arch(model), "state_dict": model.state_dict(), "bc_state_dict": bc_state}
    with open(Path(tempfile.gettempdir()) / "ch08_manifest.lock", "w") as lock:   # several trainings may finish at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        return save_checkpoint(state, f"ch08_{kind}_s{seed}", {**asdict(cfg), "kind": kind, "seed": seed},
                               f"python -m utils.planning.train --kinds {kind} --seeds {seed}", metrics)


STAGES = ("rl", "bc")


def load_agent(kind: str, seed: int, stage: str = "rl") -> nn.Module:
    """The shipped, trained agent data/ch08_{kind}_s{seed}.pt (sha256-verified), in eval mode:
    `stage="rl"` the final agent (after RL), `"bc"` the same agent after pretraining only."""
    if kind not in KINDS:
        raise CourseError(f"unknown agent kind {kind!r}: use one of {KINDS}")
    if stage not in STAGES:
        raise CourseError(f"unknown training stage {stage!r}: use one of {STAGES}")
    state, _ = load_checkpoint(f"ch08_{kind}_s{seed}")
    model = build_agent(state["arch"])
    weights = state["state_dict"] if stage == "rl" else state.get("bc_state_dict")
    if weights is None:
        raise CourseError(f"ch08_{kind}_s{seed} has no pretrained-only weights: retrain it with "
                          f"python -m utils.planning.train --kinds {kind} --seeds {seed}")
    model.load_state_dict(weights)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    torch.set_num_threads(1)
    ap.add_argument("--quiet", action="store_true", help="no progress bars (background runs)")
    args = ap.parse_args()
    cfg = TrainConfig()
    bank = train_bank(cfg)
    val = heldout_bank(cfg, cfg.n_val_levels, "val")
    for seed in args.seeds:
        for kind in args.kinds:
            model, metrics, bc_state = train_agent(kind, seed, cfg, bank, progress=not args.quiet, val_bank=val)
            entry = save_agent(model, kind, seed, cfg, metrics, bc_state)
            print(kind, seed, metrics, entry["bytes"], "bytes", flush=True)


if __name__ == "__main__":
    main()
