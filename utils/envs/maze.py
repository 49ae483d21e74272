"""A procgen-Maze-like batched environment: random mazes, a mouse, and cheese.

Langosco et al. (2022) trained procgen's Maze agent with the cheese always in the top-right
region of the maze; at test, with the cheese anywhere, the agent often went to the corner
instead. This is that task at CPU scale, stepped in numpy.

- Mazes are perfect mazes (depth-first search, one path between any two squares) of
  `n_cells` x `n_cells` rooms, i.e. a (2 n_cells - 1)-square grid of open squares and walls.
  `sizes` lists the room counts drawn from (procgen draws several sizes); every maze sits in
  the bottom-left of one observation window of side `2 * max(sizes) - 1`, the rest of the
  window is wall, so "the top-right corner" is the corner *of the maze*, as in procgen.
- The agent starts on a random open square outside the cheese region.
- Cheese: in training, on a random open square of the top-right `region` x `region` squares of
  the maze; with probability `rand_frac` (Langosco's randomisation knob), and always with
  `cheese="anywhere"`, on any open square but the agent's.
- Reward 1 for stepping onto the cheese (the episode ends); `max_steps` (default 8 x the window's
  side, a generous limit as procgen's) truncates.
- Observation: three channels (`CHANNELS`: walls, agent, cheese) of the window, flattened
  ([n_envs, 3 * side * side], `obs_shape` = (3, side, side)); a conv policy reshapes it.
- Actions: 0 up, 1 down, 2 left, 3 right (moving into a wall does nothing).

`info` on every step: `success` (cheese reached), `reached_corner` (the agent stood on the
maze's top-right square at some point of the episode), `corner_first` (it stood there before
it reached the cheese, or without reaching it), plus the protocol's `episode_return`,
`episode_length`, `final_obs`.

`MazeEnv.set_state(walls, agent, cheese)` puts chosen layouts in (counterfactual mazes that
differ only in the cheese); `bfs_distances` and `maze_layouts` serve the analysis.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, GymnasiumEnv, check_actions, check_n_envs

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
ACTION_NAMES = ("up", "down", "left", "right")
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])
CHANNELS = ("walls", "agent", "cheese")
WALLS, AGENT, CHEESE = 0, 1, 2
CHEESE_MODES = ("train", "anywhere")


def channel_index(name: str) -> int:
    """Index of an observation channel by name; one-line CourseError for an unknown name."""
    if name not in CHANNELS:
        raise CourseError(f"unknown maze channel {name!r}: use one of {', '.join(CHANNELS)}")
    return CHANNELS.index(name)


def generate_maze(n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """A perfect maze as a bool wall grid [2 n_cells - 1, 2 n_cells - 1] (True = wall), by a
    randomised depth-first search over the n_cells x n_cells rooms (rooms at even coordinates)."""
    if not isinstance(n_cells, (int, np.integer)) or n_cells < 2:
        raise CourseError(f"a maze needs at least 2 x 2 rooms, got n_cells={n_cells!r}: use sizes >= 2")
    g = 2 * n_cells - 1
    walls = np.ones((g, g), bool)
    seen = np.zeros((n_cells, n_cells), bool)
    start = (int(rng.integers(n_cells)), int(rng.integers(n_cells)))
    stack = [start]
    seen[start] = True
    walls[2 * start[0], 2 * start[1]] = False
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
                if 0 <= r + dr < n_cells and 0 <= c + dc < n_cells and not seen[r + dr, c + dc]]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[int(rng.integers(len(nbrs)))]
        seen[nr, nc] = True
        walls[2 * nr, 2 * nc] = False
        walls[r + nr, c + nc] = False  # the square between the two rooms
        stack.append((nr, nc))
    return walls


def bfs_distances(walls: np.ndarray, source) -> np.ndarray:
    """Shortest-path distances [side, side] from `source` (row, col) through open squares of the
    bool wall grid; -1 where unreachable (walls included)."""
    walls = np.asarray(walls, bool)
    dist = np.full(walls.shape, -1, np.int64)
    r0, c0 = int(source[0]), int(source[1])
    if walls[r0, c0]:
        raise CourseError(f"bfs_distances: the source {(r0, c0)} is a wall")
    dist[r0, c0] = 0
    frontier = [(r0, c0)]
    while frontier:
        nxt = []
        for r, c in frontier:
            for dr, dc in MOVES:
                rr, cc = r + dr, c + dc
                if 0 <= rr < walls.shape[0] and 0 <= cc < walls.shape[1] and not walls[rr, cc] and dist[rr, cc] < 0:
                    dist[rr, cc] = dist[r, c] + 1
                    nxt.append((rr, cc))
        frontier = nxt
    return dist


def oracle_actions(walls: np.ndarray, target) -> np.ndarray:
    """The shortest-path oracle: [side, side] int, at every open square the action (0 up, 1 down,
    2 left, 3 right) that starts the shortest path to `target`; -1 on walls, on the target and where
    it is unreachable. In a perfect maze the shortest path is unique, so the action is."""
    dist = bfs_distances(walls, target)
    side_r, side_c = dist.shape
    out = np.full(dist.shape, -1, np.int64)
    for a, (dr, dc) in enumerate(MOVES):
        nb = np.full(dist.shape, -1, np.int64)
        rs, re_ = max(0, -dr), side_r - max(0, dr)
        cs, ce = max(0, -dc), side_c - max(0, dc)
        nb[rs:re_, cs:ce] = dist[rs + dr:re_ + dr, cs + dc:ce + dc]
        step = (dist > 0) & (nb >= 0) & (nb == dist - 1) & (out < 0)
        out[step] = a
    return out


def encode(walls: np.ndarray, agent: np.ndarray, cheese: np.ndarray) -> np.ndarray:
    """Flat observations [n, 3 * side * side] from walls [n, side, side] (bool), agent [n, 2] and
    cheese [n, 2] squares (row, col); a cheese at (-1, -1) is absent (an empty cheese channel)."""
    walls, agent, cheese = np.asarray(walls, bool), np.asarray(agent), np.asarray(cheese)
    n, side = len(walls), walls.shape[-1]
    if walls.shape != (n, side, side) or agent.shape != (n, 2) or cheese.shape != (n, 2):
        raise CourseError(f"encode needs walls [n, side, side], agent [n, 2], cheese [n, 2]; got "
                          f"{walls.shape}, {agent.shape}, {cheese.shape}")
    obs = np.zeros((n, 3, side, side), np.float32)
    obs[:, WALLS] = walls
    rows = np.arange(n)
    obs[rows, AGENT, agent[:, 0], agent[:, 1]] = 1
    has = cheese[:, 0] >= 0
    obs[rows[has], CHEESE, cheese[has, 0], cheese[has, 1]] = 1
    return obs.reshape(n, -1)


class MazeEnv(BatchedEnv):
    """`n_envs` mazes stepped together (see the module docstring). The first layouts are drawn
    at construction, so `walls`, `agent`, `cheese` can be read or set before stepping."""

    n_actions = 4

    def __init__(self, n_envs: int, sizes=(3, 4), region: int = 3, rand_frac: float = 0.0, cheese: str = "train",
                 max_steps: int | None = None, seed: int = 0, auto_reset: bool = True):
        n_envs = check_n_envs(n_envs)
        sizes = tuple(int(s) for s in np.atleast_1d(sizes))
        if not sizes or min(sizes) < 2:
            raise CourseError(f"maze sizes (rooms per side) must be ints >= 2, got {sizes}: a 1-room maze has no path")
        if cheese not in CHEESE_MODES:
            raise CourseError(f"cheese must be one of {CHEESE_MODES}, got {cheese!r}")
        if not 0.0 <= float(rand_frac) <= 1.0:
            raise CourseError(f"rand_frac (the share of episodes with cheese anywhere) must be in [0, 1], got {rand_frac}")
        if not isinstance(region, (int, np.integer)) or not 1 <= region < 2 * min(sizes) - 1:
            raise CourseError(f"region must be an int in [1, {2 * min(sizes) - 2}] (smaller than the smallest maze), got {region!r}")
        self.n_envs, self.sizes, self.region = n_envs, sizes, int(region)
        self.rand_frac, self.cheese_mode, self.auto_reset = float(rand_frac), cheese, auto_reset
        self.side = 2 * max(sizes) - 1
        self.max_steps = int(max_steps) if max_steps is not None else 8 * self.side
        if self.max_steps <= 0:
            raise CourseError(f"max_steps must be positive, got {max_steps}")
        self.obs_shape = (len(CHANNELS), self.side, self.side)
        self.obs_dim = int(np.prod(self.obs_shape))
        self.rng = np.random.default_rng(seed)
        self.walls = np.ones((n_envs, self.side, self.side), bool)
        self.agent = np.zeros((n_envs, 2), np.int64)
        self.cheese = np.zeros((n_envs, 2), np.int64)
        self.grid = np.zeros(n_envs, np.int64)       # side of each maze's own grid
        self.t = np.zeros(n_envs, np.int64)
        self.ep_return = np.zeros(n_envs, np.float32)
        self.visited_corner = np.zeros(n_envs, bool)
        self.reset_where(np.ones(n_envs, bool))

    # --- layout -----------------------------------------------------------------------
    def corner(self) -> np.ndarray:
        """[n_envs, 2]: the top-right square of each maze (in window coordinates)."""
        return np.stack([self.side - self.grid, self.grid - 1], -1)

    def in_region(self, sq: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """Whether squares [n, 2] lie in the top-right region x region of mazes of side `grid`."""
        return (sq[:, 0] < self.side - grid + self.region) & (sq[:, 1] >= grid - self.region)

    def reset_where(self, mask: np.ndarray) -> None:
        """New mazes, starts and cheese in the envs where `mask` is True."""
        for i in np.flatnonzero(mask):
            n_cells = self.sizes[int(self.rng.integers(len(self.sizes)))]
            g = 2 * n_cells - 1
            w = np.ones((self.side, self.side), bool)
            w[self.side - g:, :g] = generate_maze(n_cells, self.rng)
            open_sq = np.argwhere(~w)
            region = self.in_region(open_sq, np.full(len(open_sq), g))
            anywhere = self.cheese_mode == "anywhere" or self.rng.random() < self.rand_frac
            start_pool = open_sq[~region]
            a = start_pool[int(self.rng.integers(len(start_pool)))]
            pool = open_sq[~(open_sq == a).all(-1)] if anywhere else open_sq[region]
            c = pool[int(self.rng.integers(len(pool)))]
            self.walls[i], self.agent[i], self.cheese[i], self.grid[i] = w, a, c, g
        self.t[mask] = 0
        self.ep_return[mask] = 0
        self.visited_corner[mask] = False

    def set_state(self, walls, agent, cheese) -> None:
        """Put every env in a chosen layout: walls [n_envs, side, side] (a maze made by this env,
        or `maze_layouts`), agent and cheese squares [n_envs, 2] (cheese (-1, -1): no cheese)."""
        walls, agent, cheese = np.asarray(walls, bool), np.asarray(agent, np.int64), np.asarray(cheese, np.int64)
        if walls.shape != (self.n_envs, self.side, self.side) or agent.shape != (self.n_envs, 2) or cheese.shape != (self.n_envs, 2):
            raise CourseError(f"set_state needs walls [{self.n_envs}, {self.side}, {self.side}], agent and cheese "
                              f"[{self.n_envs}, 2]; got {walls.shape}, {agent.shape}, {cheese.shape}")
        rows = np.arange(self.n_envs)
        if walls[rows, agent[:, 0], agent[:, 1]].any():
            raise CourseError("set_state: an agent stands on a wall")
        has = cheese[:, 0] >= 0
        if walls[rows[has], cheese[has, 0], cheese[has, 1]].any():
            raise CourseError("set_state: a cheese lies on a wall")
        self.walls[:], self.agent[:], self.cheese[:] = walls, agent, cheese
        # the maze's own side: the open squares' extent from the bottom-left
        open_cols = (~walls).any(1)
        self.grid[:] = np.where(open_cols.any(1), open_cols.shape[1] - np.argmax(open_cols[:, ::-1], 1), 1)
        self.t[:] = 0
        self.ep_return[:] = 0
        self.visited_corner[:] = (agent == self.corner()).all(-1)

    def observe_np(self) -> np.ndarray:
        return encode(self.walls, self.agent, self.cheese)

    # --- stepping ---------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Tensor:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.reset_where(np.ones(self.n_envs, bool))
        return torch.from_numpy(self.observe_np())

    def step_np(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = check_actions(actions, self.n_envs, 4, "0 (up), 1 (down), 2 (left) or 3 (right)").numpy()
        target = np.clip(self.agent + MOVES[actions], 0, self.side - 1)
        blocked = self.walls[np.arange(self.n_envs), target[:, 0], target[:, 1]]
        self.agent = np.where(blocked[:, None], self.agent, target)
        self.t += 1
        success = (self.agent == self.cheese).all(-1)
        at_corner = (self.agent == self.corner()).all(-1)
        corner_first = self.visited_corner | (at_corner & ~success)
        self.visited_corner |= at_corner
        terminated = success
        truncated = ~terminated & (self.t >= self.max_steps)
        reward = success.astype(np.float32)
        self.ep_return += reward
        done = terminated | truncated
        info = {"final_obs": None, "episode_return": self.ep_return.copy(), "episode_length": self.t.copy(),
                "success": success.copy(), "reached_corner": self.visited_corner.copy(), "corner_first": corner_first}
        if self.auto_reset and done.any():
            info["final_obs"] = self.observe_np()
            self.reset_where(done)
        obs = self.observe_np()
        if info["final_obs"] is None:
            info["final_obs"] = obs
        return obs, reward, terminated, truncated, info

    def step(self, actions):
        obs, reward, term, trunc, info = self.step_np(actions)
        return (torch.from_numpy(obs), torch.from_numpy(reward), torch.from_numpy(term), torch.from_numpy(trunc),
                {k: torch.from_numpy(np.asarray(v)) for k, v in info.items()})

    def render_rgb(self, i: int = 0) -> np.ndarray:
        """An RGB image [side, side, 3] of env i: walls dark, agent blue, cheese yellow."""
        img = np.where(self.walls[i][..., None], 0.15, 0.95) * np.ones(3)
        if self.cheese[i, 0] >= 0:
            img[tuple(self.cheese[i])] = (1.0, 0.8, 0.1)
        img[tuple(self.agent[i])] = (0.1, 0.3, 1.0)
        return img


def maze_layouts(n: int, seed: int = 0, cheese: str = "train", **kwargs) -> dict[str, np.ndarray]:
    """n random layouts: walls [n, side, side], agent [n, 2], cheese [n, 2], corner [n, 2]."""
    env = MazeEnv(n, seed=seed, cheese=cheese, **kwargs)
    return {"walls": env.walls.copy(), "agent": env.agent.copy(), "cheese": env.cheese.copy(), "corner": env.corner()}


def make_gym_env(render_mode: str | None = None, **kwargs) -> GymnasiumEnv:
    """One maze as a `gymnasium.Env` (flat Box observation, Discrete(4)): the one-env loop the
    benchmark compares the batched maze with."""
    return GymnasiumEnv(MazeEnv, render_mode=render_mode, **kwargs)
ENV_CLASS = MazeEnv  # what utils.envs.make_env("maze", ...) builds
