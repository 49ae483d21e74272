"""MinAtar (Young and Tian 2019) behind the course's batched protocol (`utils.envs.base`).

MinAtar's games are Atari games shrunk to a 10x10 grid with one binary channel per kind of
object (Breakout: paddle, ball, trail, brick). Two batched versions live here:

- `MinAtarBatch(game, n_envs)`: any of MinAtar's five games, stepping `n_envs` of MinAtar's
  own `Environment` objects in a Python loop (exact dynamics by construction; the speed is
  that of MinAtar itself).
- `VecBreakout(n_envs)`: Breakout re-implemented with numpy over the whole batch, one array
  operation per rule, matching MinAtar 1.0.15's `breakout.py` step for step (the tests
  replay MinAtar's own environment and compare every frame). This is where the speed comes
  from (`scripts/bench_minatar.py` prints the ratio).

Both follow MinAtar's conventions: sticky actions (with probability `sticky_action_prob`
the previous action repeats; 0.1 in the paper), the game's minimal action set as the
actions (Breakout: `NOOP`, `LEFT`, `RIGHT`), and auto-reset with `info["final_obs"]`. The
observation is the grid flattened channels-first, `[n_envs, C * 10 * 10]` float, so that
`obs.view(-1, C, 10, 10)` is the picture (`obs_shape`); `max_steps` (default none, as in
MinAtar) truncates an episode.

    env = make_minatar("breakout", n_envs=64, seed=0)
    obs = env.reset()                       # [64, 400]
    obs, r, term, trunc, info = env.step(torch.zeros(64, dtype=torch.long))
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, check_actions, check_n_envs

GAMES = ("breakout", "space_invaders", "asterix", "freeway", "seaquest")
GRID = 10
# Breakout's minimal action set, as indices into MinAtar's six actions ['n','l','u','r','d','f'].
NOOP, LEFT, RIGHT = 0, 1, 2
BREAKOUT_CHANNELS = ("paddle", "ball", "trail", "brick")


def check_game(game) -> str:
    """The game's name, or a one-line CourseError naming the games that exist."""
    if not isinstance(game, str) or game not in GAMES:
        raise CourseError(f"unknown MinAtar game {game!r}: use one of {', '.join(GAMES)}")
    return game


def check_frame(frame, n_channels: int) -> Tensor:
    """A batch of MinAtar frames as float [B, C, 10, 10]; accepts [B, C*100] or [B, C, 10, 10]
    (or one frame without the batch dimension). A one-line CourseError for any other shape."""
    frame = frame if isinstance(frame, Tensor) else torch.as_tensor(np.asarray(frame))
    shape = tuple(frame.shape)
    if shape in ((n_channels * GRID * GRID,), (n_channels, GRID, GRID)):
        frame = frame[None]
    if frame.ndim == 2 and frame.shape[1] == n_channels * GRID * GRID:
        return frame.float().view(-1, n_channels, GRID, GRID)
    if frame.ndim == 4 and tuple(frame.shape[1:]) == (n_channels, GRID, GRID):
        return frame.float()
    raise CourseError(f"a MinAtar frame with {n_channels} channels has shape [B, {n_channels}, {GRID}, {GRID}] "
                      f"or [B, {n_channels * GRID * GRID}], got {shape}")


def _check_sticky(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise CourseError(f"sticky_action_prob must be a number in [0, 1), got {p!r}")
    return float(p)


def _check_max_steps(m) -> int | None:
    if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m <= 0):
        raise CourseError(f"max_steps must be a positive int or None, got {m!r}")
    return None if m is None else int(m)


class _EpisodeCounters:
    """Per-copy return and length, with the info dict of the protocol."""

    def _init_counters(self, n: int) -> None:
        self.ep_return = np.zeros(n, np.float32)
        self.ep_len = np.zeros(n, np.int64)

    def _info(self, reward: np.ndarray, done: np.ndarray, final_obs: np.ndarray) -> dict[str, Tensor]:
        self.ep_return += reward
        self.ep_len += 1
        info = {"episode_return": torch.as_tensor(self.ep_return.copy()),
                "episode_length": torch.as_tensor(self.ep_len.copy()),
                # "success" for MinAtar: the episode scored at least one point
                "success": torch.as_tensor(self.ep_return > 0), "final_obs": torch.as_tensor(final_obs)}
        self.ep_return[done] = 0
        self.ep_len[done] = 0
        return info


class MinAtarBatch(BatchedEnv, _EpisodeCounters):
    """`n_envs` copies of one MinAtar game, each MinAtar's own `Environment` object, stepped in turn.

    Copy i is seeded with `seed + i` (MinAtar's `Environment.seed`), so a batch reproduces."""

    def __init__(self, game: str, n_envs: int, seed: int = 0, sticky_action_prob: float = 0.1,
                 difficulty_ramping: bool = True, max_steps: int | None = None, auto_reset: bool = True):
        from minatar import Environment

        self.game = check_game(game)
        self.n_envs = check_n_envs(n_envs)
        self.sticky_action_prob = _check_sticky(sticky_action_prob)
        self.max_steps, self.auto_reset, self.seed = _check_max_steps(max_steps), bool(auto_reset), int(seed)
        self.envs = [Environment(game, sticky_action_prob=self.sticky_action_prob, difficulty_ramping=difficulty_ramping)
                     for _ in range(self.n_envs)]
        self.actions = list(self.envs[0].minimal_action_set())
        self.n_actions = len(self.actions)
        self.n_channels = int(self.envs[0].state_shape()[2])
        self.obs_shape = (self.n_channels, GRID, GRID)
        self.obs_dim = self.n_channels * GRID * GRID
        self.channels = tuple(sorted(self.envs[0].env.channels, key=self.envs[0].env.channels.get))
        self._init_counters(self.n_envs)

    def _obs(self) -> np.ndarray:
        return np.stack([e.state().transpose(2, 0, 1).reshape(-1) for e in self.envs]).astype(np.float32)

    def reset(self, seed: int | None = None) -> Tensor:
        base = self.seed if seed is None else int(seed)
        for i, e in enumerate(self.envs):
            e.seed(base + i)
            e.last_action = 0
            e.reset()
        self._init_counters(self.n_envs)
        return torch.as_tensor(self._obs())

    def step(self, actions) -> tuple:
        a = check_actions(actions, self.n_envs, self.n_actions).numpy()
        reward = np.zeros(self.n_envs, np.float32)
        term = np.zeros(self.n_envs, bool)
        for i, e in enumerate(self.envs):
            r, t = e.act(self.actions[a[i]])
            reward[i], term[i] = r, t
        trunc = (self.ep_len + 1 >= self.max_steps) & ~term if self.max_steps else np.zeros(self.n_envs, bool)
        done = term | trunc
        final_obs = self._obs()
        info = self._info(reward, done, final_obs)
        obs = final_obs
        if self.auto_reset and done.any():
            obs = final_obs.copy()
            for i in np.flatnonzero(done):
                self.envs[i].reset()
                self.envs[i].last_action = 0
                obs[i] = self.envs[i].state().transpose(2, 0, 1).reshape(-1)
        return torch.as_tensor(obs), torch.as_tensor(reward), torch.as_tensor(term), torch.as_tensor(trunc), info


class VecBreakout(BatchedEnv, _EpisodeCounters):
    """MinAtar Breakout for `n_envs` copies at once, one numpy operation per rule of the game.

    State (all arrays over the batch): `ball_x`, `ball_y`, `ball_dir` (0: up-left, 1: up-right,
    2: down-right, 3: down-left), `last_x`, `last_y` (the trail), `pos` (paddle column, row 9),
    `bricks` [n, 10, 10], `strike` (the ball hit a brick last step). Reward +1 per brick;
    the episode terminates when the ball reaches the bottom row away from the paddle.
    `set_state` / `get_state` let an experiment put the ball or paddle anywhere."""

    channels = BREAKOUT_CHANNELS
    n_channels = 4
    obs_shape = (4, GRID, GRID)
    obs_dim = 4 * GRID * GRID
    n_actions = 3
    _FLIP_X = np.array([1, 0, 3, 2])
    _FLIP_Y = np.array([3, 2, 1, 0])
    _PADDLE_EDGE = np.array([2, 3, 0, 1])
    _DX = np.array([-1, 1, 1, -1])
    _DY = np.array([-1, -1, 1, 1])

    def __init__(self, n_envs: int, seed: int = 0, sticky_action_prob: float = 0.1, max_steps: int | None = None,
                 auto_reset: bool = True):
        self.n_envs = check_n_envs(n_envs)
        self.sticky_action_prob = _check_sticky(sticky_action_prob)
        self.max_steps, self.auto_reset, self.seed = _check_max_steps(max_steps), bool(auto_reset), int(seed)
        self.rng = np.random.default_rng(self.seed)
        n = self.n_envs
        self.ball_x, self.ball_y, self.ball_dir = (np.zeros(n, np.int64) for _ in range(3))
        self.last_x, self.last_y, self.pos = (np.zeros(n, np.int64) for _ in range(3))
        self.bricks = np.zeros((n, GRID, GRID), bool)
        self.strike = np.zeros(n, bool)
        self.last_action = np.zeros(n, np.int64)
        self._init_counters(n)

    def _reset_rows(self, rows: np.ndarray) -> None:
        start = self.rng.integers(0, 2, len(rows))
        self.ball_y[rows] = 3
        self.ball_x[rows] = np.where(start == 0, 0, 9)
        self.ball_dir[rows] = np.where(start == 0, 2, 3)
        self.pos[rows] = 4
        self.bricks[rows] = False
        self.bricks[rows, 1:4, :] = True
        self.strike[rows] = False
        self.last_x[rows], self.last_y[rows] = self.ball_x[rows], self.ball_y[rows]
        self.last_action[rows] = 0

    def reset(self, seed: int | None = None) -> Tensor:
        if seed is not None:
            self.rng = np.random.default_rng(int(seed))
        self._reset_rows(np.arange(self.n_envs))
        self._init_counters(self.n_envs)
        return torch.as_tensor(self._obs())

    def _obs(self) -> np.ndarray:
        return breakout_frames(self.get_state())

    def get_state(self) -> dict[str, np.ndarray]:
        """A copy of the whole batch's game state."""
        return {k: getattr(self, k).copy() for k in ("ball_x", "ball_y", "ball_dir", "last_x", "last_y", "pos",
                                                      "bricks", "strike", "last_action")}

    def set_state(self, state: dict[str, np.ndarray]) -> Tensor:
        """Overwrite the game state (e.g. to move the ball); returns the new observation."""
        for k, v in state.items():
            if k not in self.get_state():
                raise CourseError(f"unknown Breakout state field {k!r}: use one of {', '.join(self.get_state())}")
            getattr(self, k)[...] = v
        return torch.as_tensor(self._obs())

    def step(self, actions) -> tuple:
        a = check_actions(actions, self.n_envs, self.n_actions).numpy()
        if self.sticky_action_prob > 0:
            sticky = self.rng.random(self.n_envs) < self.sticky_action_prob
            a = np.where(sticky, self.last_action, a)
        self.last_action = a.copy()
        idx = np.arange(self.n_envs)
        reward = np.zeros(self.n_envs, np.float32)
        # paddle
        self.pos = np.clip(self.pos + (a == RIGHT) - (a == LEFT), 0, 9)
        # ball
        self.last_x, self.last_y = self.ball_x.copy(), self.ball_y.copy()
        new_x = self.ball_x + self._DX[self.ball_dir]
        new_y = self.ball_y + self._DY[self.ball_dir]
        side = (new_x < 0) | (new_x > 9)
        new_x = np.clip(new_x, 0, 9)
        self.ball_dir = np.where(side, self._FLIP_X[self.ball_dir], self.ball_dir)
        top = new_y < 0
        new_y = np.where(top, 0, new_y)
        self.ball_dir = np.where(top, self._FLIP_Y[self.ball_dir], self.ball_dir)
        yy = np.clip(new_y, 0, 9)
        brick = ~top & self.bricks[idx, yy, new_x]
        hit = brick & ~self.strike
        reward[hit] = 1
        self.bricks[idx[hit], new_y[hit], new_x[hit]] = False
        new_y = np.where(hit, self.last_y, new_y)
        self.ball_dir = np.where(hit, self._FLIP_Y[self.ball_dir], self.ball_dir)
        bottom = ~top & ~brick & (new_y == 9)
        refill = bottom & ~self.bricks.reshape(self.n_envs, -1).any(1)
        self.bricks[refill, 1:4, :] = True
        straight = bottom & (self.ball_x == self.pos)
        edge = bottom & ~straight & (new_x == self.pos)
        term = bottom & ~straight & ~edge
        self.ball_dir = np.where(straight, self._FLIP_Y[self.ball_dir],
                                 np.where(edge, self._PADDLE_EDGE[self.ball_dir], self.ball_dir))
        new_y = np.where(straight | edge, self.last_y, new_y)
        self.strike = brick
        self.ball_x, self.ball_y = new_x, new_y
        trunc = (self.ep_len + 1 >= self.max_steps) & ~term if self.max_steps else np.zeros(self.n_envs, bool)
        done = term | trunc
        final_obs = self._obs()
        info = self._info(reward, done, final_obs)
        obs = final_obs
        if self.auto_reset and done.any():
            self._reset_rows(np.flatnonzero(done))
            obs = self._obs()
        return torch.as_tensor(obs), torch.as_tensor(reward), torch.as_tensor(term), torch.as_tensor(trunc), info


def breakout_frames(state: dict[str, np.ndarray]) -> np.ndarray:
    """Flat Breakout observations [n, 400] (channels paddle, ball, trail, brick) of a batch of
    game states (the dict of `VecBreakout.get_state`; only pos, ball_x/y, last_x/y and bricks are read)."""
    pos = np.asarray(state["pos"])
    n, idx = len(pos), np.arange(len(pos))
    for k in ("pos", "ball_x", "ball_y", "last_x", "last_y"):
        v = np.asarray(state[k])
        if v.shape != (n,) or v.min() < 0 or v.max() > 9:
            raise CourseError(f"Breakout state {k!r} must hold {n} grid coordinates in 0..9, got shape {v.shape}")
    grid = np.zeros((n, 4, GRID, GRID), np.float32)
    grid[idx, 0, 9, pos] = 1
    grid[idx, 1, state["ball_y"], state["ball_x"]] = 1
    grid[idx, 2, state["last_y"], state["last_x"]] = 1
    grid[:, 3] = np.asarray(state["bricks"], bool)
    return grid.reshape(n, -1)


def make_minatar(game: str, n_envs: int, seed: int = 0, vectorised: bool = True, **kwargs) -> BatchedEnv:
    """A batched MinAtar game: the numpy re-implementation where one exists (Breakout) and
    `vectorised`, else MinAtar's own objects stepped in a batch (`MinAtarBatch`)."""
    check_game(game)
    if game == "breakout" and vectorised:
        return VecBreakout(n_envs, seed=seed, **kwargs)
    return MinAtarBatch(game, n_envs, seed=seed, **kwargs)


def random_policy_returns(env: BatchedEnv, n_episodes: int, seed: int = 0) -> np.ndarray:
    """Returns of `n_episodes` episodes of the uniform random policy (the floor every agent must clear)."""
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes <= 0:
        raise CourseError(f"n_episodes must be a positive int, got {n_episodes!r}")
    g = torch.Generator().manual_seed(seed)
    env.reset(seed=seed)
    out: list[float] = []
    while len(out) < n_episodes:
        _, _, term, trunc, info = env.step(torch.randint(0, env.n_actions, (env.n_envs,), generator=g))
        done = term | trunc
        out += info["episode_return"][done].tolist()
    return np.asarray(out[:n_episodes], np.float64)
