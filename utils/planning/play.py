"""Greedy play on chosen levels, with extra "thinking" steps, recorded internals and edits.

`play(model, bank, levels, think=k)` plays every level once, all in one batched env: before
the first move the agent is fed its first observation `k` extra times (k * N extra ticks of a
DRC(D, N), the protocol of Guez et al. 2019), the actions of those steps discarded; then it
acts greedily (or by sampling) until the level is solved or `max_steps` pass. It can record
any hooks at every step (`record=[names]`) and apply edit hooks (`fwd_hooks=[(name, fn)]`,
active on the acting steps, and on the thinking steps too unless `edit_thinking=False`).

`thinking_curve` is the solve rate against k; `pacing` measures no-ops and back-and-forth moves
at the start of each episode.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from utils.core import CourseError
from utils.envs.sokoban import DOWN, LEFT, NOOP, RIGHT, UP, LevelBank, Sokoban

THINK_STEPS = (0, 1, 2, 4, 8)
OPPOSITE = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT}


@dataclass
class Play:
    solved: np.ndarray        # [n] bool
    length: np.ndarray        # [n] steps taken (max_steps if unsolved)
    actions: np.ndarray       # [n, max_steps] (-1 after the end)
    agent: np.ndarray         # [n, max_steps + 1, 2] agent position before each step (frozen after the end)
    boxes: np.ndarray         # [n, max_steps + 1, H, W] box planes before each step
    pushed: np.ndarray        # [n, max_steps] bool, a box was pushed at that step
    levels: np.ndarray        # [n] level indices
    obs: Tensor = field(repr=False, default=None)   # [n, max_steps, 5, H, W] observations the agent acted on
    acts: dict = field(repr=False, default_factory=dict)  # hook name -> [n, max_steps, ...] recorded activations
    live: np.ndarray = field(repr=False, default=None)    # [n, max_steps] bool, the step was played
    walls: np.ndarray = field(repr=False, default=None)   # [n, H, W] bool

    @property
    def solve_rate(self) -> float:
        return float(self.solved.mean())


def check_think(think) -> int:
    if not isinstance(think, (int, np.integer)) or think < 0 or think > 64:
        raise CourseError(f"unknown thinking-step count {think!r}: use an int in 0..64 (the chapter uses {THINK_STEPS})")
    return int(think)


@torch.no_grad()
def play(model: nn.Module, bank: LevelBank, levels=None, think: int = 0, max_steps: int = 40, greedy: bool = True,
         record: tuple[str, ...] = (), fwd_hooks: list | None = None, edit_thinking: bool = True,
         keep_obs: bool = False, seed: int = 0) -> Play:
    """Play `levels` (indices into `bank`, default all) once each; see the module docstring."""
    think = check_think(think)
    levels = np.arange(len(bank)) if levels is None else np.asarray(levels).reshape(-1)
    n = len(levels)
    env = Sokoban(n, bank, max_steps=max_steps, auto_reset=False)
    obs = env.set_levels(levels)
    names = set(getattr(model, "hook_dict", {}))
    for name in list(record) + [h[0] for h in (fwd_hooks or [])]:
        if name not in names:
            raise CourseError(f"unknown hook {name!r} for {type(model).__name__}: choose from {sorted(names)[:8]} ...")
    store: dict[str, list] = {k: [] for k in record}
    current: dict[str, Tensor] = {}

    def recorder(act, hook):
        current[hook.name] = act.detach().clone()

    rec_hooks = [(k, recorder) for k in record]
    state = model.initial_state(n)
    g = torch.Generator().manual_seed(seed)
    if think:
        with model.hooks(fwd_hooks=(fwd_hooks or []) if edit_thinking else []):
            for _ in range(think):
                _, _, state = model.step(obs, state)
    size = bank.size
    actions = np.full((n, max_steps), -1)
    agent = np.zeros((n, max_steps + 1, 2), int)
    boxes = np.zeros((n, max_steps + 1, size, size), bool)
    pushed = np.zeros((n, max_steps), bool)
    live = np.zeros((n, max_steps), bool)
    done = np.zeros(n, bool)
    solved = np.zeros(n, bool)
    length = np.full(n, max_steps)
    obs_keep = torch.zeros(n, max_steps, *obs.shape[1:]) if keep_obs else None
    for t in range(max_steps):
        agent[:, t], boxes[:, t] = env.agent, env.boxes
        live[:, t] = ~done
        if keep_obs:
            obs_keep[:, t] = obs
        with model.hooks(fwd_hooks=rec_hooks + list(fwd_hooks or [])):
            logits, _, state = model.step(obs, state)
        for k in record:
            store[k].append(current[k])
        a = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits, -1), 1, generator=g)[:, 0]
        a = torch.where(torch.from_numpy(done), torch.full_like(a, NOOP), a)
        obs, _, term, trunc, info = env.step(a)
        actions[~done, t] = a.numpy()[~done]
        pushed[:, t] = info["pushed"].numpy() & ~done
        newly = term.numpy() & ~done
        solved |= newly
        length[newly] = t + 1
        done |= newly | trunc.numpy()
        if done.all():
            agent[:, t + 1:], boxes[:, t + 1:] = env.agent[:, None], env.boxes[:, None]
            break
    else:
        agent[:, max_steps], boxes[:, max_steps] = env.agent, env.boxes
    acts = {k: torch.stack(v, 1) for k, v in store.items()}
    return Play(solved, length, actions, agent, boxes, pushed, levels, obs_keep, acts, live, env.walls.copy())


def thinking_curve(model: nn.Module, bank: LevelBank, think_steps=THINK_STEPS, levels=None, max_steps: int = 40,
                   greedy: bool = True, seed: int = 0) -> dict[int, np.ndarray]:
    """{k: solved [n] bool} for each number k of extra thinking steps before the first move
    (sampled play uses the same `seed` for every k)."""
    return {int(k): play(model, bank, levels, think=k, max_steps=max_steps, greedy=greedy, seed=seed).solved
            for k in think_steps}


def pacing(actions: np.ndarray, first: int = 5) -> dict[str, np.ndarray]:
    """Per episode, over its first `first` actions: the fraction of no-ops and of back-and-forth
    moves (an action that undoes the previous one), and their sum ("pacing"). Actions [n, T],
    -1 after the end of the episode (those steps are not counted)."""
    actions = np.asarray(actions)
    if actions.ndim != 2:
        raise CourseError(f"pacing needs actions [n_episodes, T], got shape {actions.shape}")
    a = actions[:, :first]
    valid = a >= 0
    noop = ((a == NOOP) & valid).sum(1)
    back = np.zeros(len(a))
    for t in range(1, a.shape[1]):
        prev, cur = a[:, t - 1], a[:, t]
        undo = np.array([OPPOSITE.get(int(p), -9) == int(c) for p, c in zip(prev, cur)])
        back += undo & valid[:, t]
    n = np.maximum(valid.sum(1), 1)
    return {"noop": noop / n, "back_and_forth": back / n, "pacing": (noop + back) / n}
