"""Game variables read off MinAtar states, rollouts that record them, and interventions on the grid.

Breakout's variables (`breakout_variables`): the ball's column and row, its direction, whether
it is falling, the column where it will reach the paddle row (`landing_x`, walls reflect it),
the steps until it gets there (`time_to_impact`), where the paddle should go (`target`: 0 left,
1 stay, 2 right of the paddle's column) and the number of bricks left. Space Invaders'
enemy count is the number of alien cells. Variables that only exist while the ball falls are
-1 otherwise.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.minatar import VecBreakout, breakout_frames

DX = np.array([-1, 1, 1, -1])
FALLING = (2, 3)


def landing_column(ball_x: np.ndarray, ball_y: np.ndarray, ball_dir: np.ndarray) -> np.ndarray:
    """Column at which a falling ball reaches row 9 (bouncing off the side walls as MinAtar does); -1 if rising."""
    x, y, d = np.array(ball_x), np.array(ball_y), np.array(ball_dir)
    falling = np.isin(d, FALLING)
    for _ in range(10):
        move = falling & (y < 9)
        nx = x + DX[d]
        side = move & ((nx < 0) | (nx > 9))
        d = np.where(side, np.array([1, 0, 3, 2])[d], d)
        x = np.where(move, np.clip(nx, 0, 9), x)
        y = np.where(move, y + 1, y)
    return np.where(falling, x, -1)


def breakout_variables(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Game variables [n] of a batch of Breakout states (see the module docstring)."""
    bx, by, bd, pos = (np.asarray(state[k]) for k in ("ball_x", "ball_y", "ball_dir", "pos"))
    falling = np.isin(bd, FALLING)
    land = landing_column(bx, by, bd)
    target = np.where(falling, np.sign(land - pos) + 1, -1)
    return {"ball_x": bx.copy(), "ball_y": by.copy(), "ball_dir": bd.copy(), "falling": falling.astype(np.int64),
            "landing_x": land, "time_to_impact": np.where(falling, 9 - by, -1), "target": target,
            "paddle_x": pos.copy(), "bricks": np.asarray(state["bricks"]).reshape(len(bx), -1).sum(1)}


@torch.no_grad()
def collect_breakout(net, n_envs: int = 32, n_steps: int = 200, seed: int = 0, max_steps: int = 1000) -> dict:
    """Play `net` (sampling its policy) in `n_envs` Breakout copies for `n_steps` steps and record
    every visited frame: {"obs" [N, 400], "state" (dict of [N] arrays), "vars" (breakout_variables),
    "episode" [N] (a distinct id per episode: the unit of grouped splits), "action" [N]}."""
    if n_envs <= 0 or n_steps <= 0:
        raise CourseError(f"collect_breakout needs positive n_envs and n_steps, got {n_envs}, {n_steps}")
    env = VecBreakout(n_envs, seed=seed, max_steps=max_steps)
    g = torch.Generator().manual_seed(seed)
    obs = env.reset(seed=seed)
    episode = np.arange(n_envs)
    next_id = n_envs
    rows: dict[str, list] = {"obs": [], "episode": [], "action": [], "state": []}
    for _ in range(n_steps):
        rows["state"].append(env.get_state())
        logits = net(obs)
        action = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(1)
        rows["obs"].append(obs)
        rows["episode"].append(episode.copy())
        rows["action"].append(action)
        obs, _, term, trunc, _ = env.step(action)
        done = (term | trunc).numpy()
        episode[done] = next_id + np.arange(done.sum())
        next_id += int(done.sum())
    state = {k: np.concatenate([s[k] for s in rows["state"]]) for k in rows["state"][0]}
    return {"obs": torch.cat(rows["obs"]), "state": state, "vars": breakout_variables(state),
            "episode": np.concatenate(rows["episode"]), "action": torch.cat(rows["action"])}


def select(data: dict, mask: np.ndarray) -> dict:
    """The rows `mask` of a `collect_breakout` record."""
    mask = np.asarray(mask)
    return {"obs": data["obs"][torch.as_tensor(mask)], "state": {k: v[mask] for k, v in data["state"].items()},
            "vars": {k: v[mask] for k, v in data["vars"].items()}, "episode": data["episode"][mask],
            "action": data["action"][torch.as_tensor(mask)]}


def move_ball(state: dict[str, np.ndarray], dx: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The states with the ball (and its trail, so the direction is kept) shifted `dx` columns,
    and a bool [n] mask of the rows where both stay on the grid (the other rows are unchanged)."""
    out = {k: np.array(v, copy=True) for k, v in state.items()}
    ok = (out["ball_x"] + dx >= 0) & (out["ball_x"] + dx <= 9) & (out["last_x"] + dx >= 0) & (out["last_x"] + dx <= 9)
    out["ball_x"] = np.where(ok, out["ball_x"] + dx, out["ball_x"])
    out["last_x"] = np.where(ok, out["last_x"] + dx, out["last_x"])
    return out, ok


def move_paddle(state: dict[str, np.ndarray], dx: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The states with the paddle shifted `dx` columns, and the mask of rows where it stays on the grid."""
    out = {k: np.array(v, copy=True) for k, v in state.items()}
    ok = (out["pos"] + dx >= 0) & (out["pos"] + dx <= 9)
    out["pos"] = np.where(ok, out["pos"] + dx, out["pos"])
    return out, ok


def frames(state: dict[str, np.ndarray]) -> Tensor:
    """Observations [n, 400] of Breakout states."""
    return torch.as_tensor(breakout_frames(state))


@torch.no_grad()
def collect_minatar_frames(net, env, n_steps: int, seed: int = 0) -> dict:
    """Frames visited by `net` in a batched MinAtar env (any game), with episode ids: {"obs", "episode"}."""
    g = torch.Generator().manual_seed(seed)
    obs = env.reset(seed=seed)
    episode = np.arange(env.n_envs)
    next_id = env.n_envs
    obs_rows, ep_rows = [], []
    for _ in range(n_steps):
        obs_rows.append(obs)
        ep_rows.append(episode.copy())
        action = torch.multinomial(torch.softmax(net(obs), -1), 1, generator=g).squeeze(1)
        obs, _, term, trunc, _ = env.step(action)
        done = (term | trunc).numpy()
        episode[done] = next_id + np.arange(done.sum())
        next_id += int(done.sum())
    return {"obs": torch.cat(obs_rows), "episode": np.concatenate(ep_rows)}
