"""The colour-goal gridworld: a batch of environments stepped at once in numpy.

A `size` x `size` room holds the agent and two coloured tiles, one RED and one BLUE.
The observation names which colour is the goal this episode. Stepping onto the goal
tile ends the episode with reward `1 - 0.9 * t / max_steps` (MiniGrid's convention);
stepping onto the other tile ends it with 0; running out of steps truncates it.
So the agent must *read the cue*, *find the right tile* and *walk to it* without
touching the wrong one: a small amount of reasoning, and a natural counterfactual
(flip the cue, keep the layout) for interpretability.

Observation (flat float32, length 3 * size**2 + 2): three one-hot planes
[agent, red tile, blue tile], each flattened row-major, then the goal colour one-hot
[red, blue]. Actions: 0 up, 1 down, 2 left, 3 right (moves into a wall do nothing).

Three ways to get the task:
- `ColourGoalGrid(n_envs)`: the batched environment of the course's protocol
  (`utils.envs.base`), stepped in numpy, auto-resetting finished envs.
- `gymnasium.make("CourseColourGoal-5x5-v0")`: one environment through the course's
  Gymnasium adapter (what Stable-Baselines3 or any gym-stepped library uses).
- `make_minigrid_colour_goal()`: the equivalent MiniGrid task (two coloured floor tiles,
  mission "go to the red tile"), with MiniGrid's own egocentric actions and observations.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Floor
from minigrid.minigrid_env import MiniGridEnv
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, GymnasiumEnv, check_actions, check_n_envs

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
ACTION_NAMES = ("up", "down", "left", "right")
RED, BLUE = 0, 1
COLOUR_NAMES = ("red", "blue")
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # (row, col) change per action


def obs_dim_for(size: int) -> int:
    return 3 * size * size + 2


def encode(agent, tiles, goal, size: int = 5) -> np.ndarray:
    """Observations [n, 3*size**2 + 2] from agent cells [n, 2], tile cells [n, 2 (red, blue), 2]
    and goal colours [n] (0 red, 1 blue); cells are (row, col)."""
    agent, tiles, goal = np.asarray(agent), np.asarray(tiles), np.asarray(goal)
    n = len(agent)
    if agent.shape != (n, 2) or tiles.shape != (n, 2, 2) or goal.shape != (n,):
        raise CourseError(f"encode needs agent [n, 2], tiles [n, 2, 2], goal [n]; got {agent.shape}, {tiles.shape}, {goal.shape}")
    if (agent < 0).any() or (agent >= size).any() or (tiles < 0).any() or (tiles >= size).any():
        raise CourseError(f"cells must lie in the {size}x{size} room (rows and columns 0..{size - 1})")
    if not np.isin(goal, (RED, BLUE)).all():
        raise CourseError("goal colours must be 0 (red) or 1 (blue)")
    cells = size * size
    obs = np.zeros((n, 3 * cells + 2), np.float32)
    rows = np.arange(n)
    obs[rows, agent[:, 0] * size + agent[:, 1]] = 1
    obs[rows, cells + tiles[:, RED, 0] * size + tiles[:, RED, 1]] = 1
    obs[rows, 2 * cells + tiles[:, BLUE, 0] * size + tiles[:, BLUE, 1]] = 1
    obs[rows, 3 * cells + goal] = 1
    return obs


class ColourGoalGrid(BatchedEnv):
    """A batch of `n_envs` colour-goal rooms stepped together (see the module docstring).
    The first layouts are drawn at construction (so `agent`, `tiles`, `goal` can be read or
    set before stepping); `reset()` draws new ones."""

    n_actions = 4

    def __init__(self, n_envs: int, size: int = 5, max_steps: int | None = None, seed: int = 0, auto_reset: bool = True):
        n_envs = check_n_envs(n_envs)
        if not isinstance(size, (int, np.integer)) or size < 3:
            raise CourseError(f"size must be an int >= 3 (room for the agent and two tiles), got {size!r}")
        max_steps = 4 * size if max_steps is None else max_steps
        if max_steps <= 0:
            raise CourseError(f"max_steps must be positive, got {max_steps}")
        self.n_envs, self.size, self.max_steps, self.auto_reset = int(n_envs), int(size), int(max_steps), auto_reset
        self.obs_dim = obs_dim_for(self.size)
        self.rng = np.random.default_rng(seed)
        self.agent = np.zeros((self.n_envs, 2), np.int64)
        self.tiles = np.zeros((self.n_envs, 2, 2), np.int64)
        self.goal = np.zeros(self.n_envs, np.int64)
        self.t = np.zeros(self.n_envs, np.int64)
        self.ep_return = np.zeros(self.n_envs, np.float32)
        self.reset_where(np.ones(self.n_envs, bool))

    # --- state -------------------------------------------------------------------------
    def reset_where(self, mask: np.ndarray) -> None:
        """Start new episodes in the envs where `mask` is True: three distinct random cells."""
        k = int(mask.sum())
        if k == 0:
            return
        cells = np.argsort(self.rng.random((k, self.size * self.size)), axis=1)[:, :3]
        rc = np.stack([cells // self.size, cells % self.size], -1)  # [k, 3, 2]
        self.agent[mask] = rc[:, 0]
        self.tiles[mask] = rc[:, 1:]
        self.goal[mask] = self.rng.integers(0, 2, k)
        self.t[mask] = 0
        self.ep_return[mask] = 0

    def set_state(self, agent, tiles, goal) -> None:
        """Put every env in a chosen state (for counterfactuals and controlled evaluations)."""
        agent, tiles, goal = np.asarray(agent), np.asarray(tiles), np.asarray(goal)
        encode(agent, tiles, goal, self.size)  # validates shapes and ranges
        if len(agent) != self.n_envs:
            raise CourseError(f"set_state needs {self.n_envs} states, got {len(agent)}")
        if ((agent == tiles[:, 0]).all(-1) | (agent == tiles[:, 1]).all(-1) | (tiles[:, 0] == tiles[:, 1]).all(-1)).any():
            raise CourseError("the agent and the two tiles must occupy three different cells")
        self.agent[:], self.tiles[:], self.goal[:] = agent, tiles, goal
        self.t[:] = 0
        self.ep_return[:] = 0

    def observe_np(self) -> np.ndarray:
        return encode(self.agent, self.tiles, self.goal, self.size)

    # --- stepping ----------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Tensor:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.reset_where(np.ones(self.n_envs, bool))
        return torch.from_numpy(self.observe_np())

    def step_np(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every env by one action. Returns (obs, reward, terminated, truncated, info);
        with auto-reset, `obs` of a finished env is the first observation of its next episode,
        and info holds `final_obs`, `episode_return`, `episode_length`, `success` (read them
        where terminated | truncated)."""
        actions = check_actions(actions, self.n_envs, 4, "0 (up), 1 (down), 2 (left) or 3 (right)").numpy()
        self.agent = np.clip(self.agent + MOVES[actions], 0, self.size - 1)
        self.t += 1
        on_red = (self.agent == self.tiles[:, RED]).all(-1)
        on_blue = (self.agent == self.tiles[:, BLUE]).all(-1)
        on_goal = np.where(self.goal == RED, on_red, on_blue)
        terminated = on_red | on_blue
        truncated = ~terminated & (self.t >= self.max_steps)
        reward = np.where(on_goal, 1.0 - 0.9 * self.t / self.max_steps, 0.0).astype(np.float32)
        self.ep_return += reward
        done = terminated | truncated
        info = {"final_obs": None, "episode_return": self.ep_return.copy(), "episode_length": self.t.copy(),
                "success": on_goal.copy(), "reached_red": on_red.copy(), "reached_blue": on_blue.copy()}
        if self.auto_reset and done.any():
            info["final_obs"] = self.observe_np()
            self.reset_where(done)
        obs = self.observe_np()
        if info["final_obs"] is None:
            info["final_obs"] = obs
        return obs, reward, terminated, truncated, info

    def step(self, actions) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """`step_np` with torch tensors in and out (the interface of utils.rl)."""
        obs, reward, term, trunc, info = self.step_np(actions)
        return (torch.from_numpy(obs), torch.from_numpy(reward), torch.from_numpy(term), torch.from_numpy(trunc),
                {k: torch.from_numpy(np.asarray(v)) for k, v in info.items()})

    # --- helpers for analysis ----------------------------------------------------------
    def goal_cell(self) -> np.ndarray:
        return self.tiles[np.arange(self.n_envs), self.goal]

    def render_rgb(self, i: int = 0) -> np.ndarray:
        """An RGB image [size, size, 3] of env i: agent black, red and blue tiles (the goal one bright)."""
        img = np.ones((self.size, self.size, 3))
        for c, rgb in ((RED, (1.0, 0.2, 0.2)), (BLUE, (0.2, 0.3, 1.0))):
            shade = np.array(rgb) if c == self.goal[i] else 0.55 + 0.45 * np.array(rgb)
            img[tuple(self.tiles[i, c])] = shade
        img[tuple(self.agent[i])] = (0, 0, 0)
        return img


def random_layouts(n: int, size: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(agent [n, 2], tiles [n, 2, 2], goal [n]) for n random start states."""
    env = ColourGoalGrid(n, size=size, seed=seed)
    return env.agent.copy(), env.tiles.copy(), env.goal.copy()


def shortest_path_actions(agent: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[n, 4] bool: which actions reduce the Manhattan distance from agent to target."""
    d = np.asarray(target) - np.asarray(agent)
    return np.stack([d[:, 0] < 0, d[:, 0] > 0, d[:, 1] < 0, d[:, 1] > 0], -1)


# --- counterfactuals and task variables for interpretability --------------------------
@torch.no_grad()
def counterfactual_cue_pairs(model, agent, tiles, size: int = 5) -> dict[str, Tensor]:
    """Counterfactual pairs from given layouts (agent [n, 2], tiles [n, 2, 2]): each layout with
    goal RED (clean) and goal BLUE (corrupt), kept where the model's greedy actions differ.
    Returns clean, corrupt [m, obs_dim], a_clean, a_corrupt [m] (long) and the kept layouts
    agent [m, 2], tiles [m, 2, 2]. The inputs are not modified."""
    agent, tiles = np.asarray(agent), np.asarray(tiles)
    n = len(agent)
    clean = torch.from_numpy(encode(agent, tiles, np.full(n, RED), size))
    corrupt = torch.from_numpy(encode(agent, tiles, np.full(n, BLUE), size))
    a_clean, a_corrupt = model(clean).argmax(-1), model(corrupt).argmax(-1)
    keep = a_clean != a_corrupt
    k = keep.numpy()
    return {"clean": clean[keep], "corrupt": corrupt[keep], "a_clean": a_clean[keep], "a_corrupt": a_corrupt[keep],
            "agent": torch.from_numpy(agent[k].copy()), "tiles": torch.from_numpy(tiles[k].copy())}


@torch.no_grad()
def cue_pairs(model, n: int = 512, size: int = 5, seed: int = 0,
              make_pairs=counterfactual_cue_pairs) -> dict[str, Tensor]:
    """Counterfactual pairs on `n` random layouts: the same layout with goal RED (clean) and goal
    BLUE (corrupt), kept where the model's greedy actions differ (`make_pairs(model, agent, tiles,
    size)` builds them; default `counterfactual_cue_pairs`). Returns clean, corrupt [m, obs_dim],
    a_clean, a_corrupt [m] and the layouts (agent, tiles)."""
    agent, tiles, _ = random_layouts(n, size, seed)
    pairs = make_pairs(model, agent, tiles, size)
    if len(pairs["clean"]) < 2:
        raise CourseError("fewer than 2 layouts where flipping the goal colour changes the action: is the agent trained?")
    return pairs


def gridworld_features(agent, tiles, goal) -> dict[str, Tensor]:
    """Task variables for probes: the goal colour (read off the input), and computed ones
    that combine the cue with positions: is the goal left of / above the agent, is the
    goal nearer than the other tile (Manhattan)."""
    agent, tiles, goal = (np.asarray(x) for x in (agent, tiles, goal))
    n = len(agent)
    goal_cell = tiles[np.arange(n), goal]
    other_cell = tiles[np.arange(n), 1 - goal]
    d_goal = np.abs(goal_cell - agent).sum(-1)
    d_other = np.abs(other_cell - agent).sum(-1)
    feats = {
        "goal is red": goal == RED,
        "goal is left of agent": goal_cell[:, 1] < agent[:, 1],
        "goal is above agent": goal_cell[:, 0] < agent[:, 0],
        "goal nearer than other tile": d_goal < d_other,
    }
    return {k: torch.from_numpy(v.astype(np.int64)) for k, v in feats.items()}


# --- one environment through Gymnasium -------------------------------------------------
def make_gym_env(size: int = 5, max_steps: int | None = None, render_mode: str | None = None) -> GymnasiumEnv:
    """One colour-goal room as a `gymnasium.Env` (flat Box observation, Discrete(4) actions)."""
    return GymnasiumEnv(ColourGoalGrid, render_mode=render_mode, size=size, max_steps=max_steps)


GYM_ID = "CourseColourGoal-5x5-v0"
MINIGRID_ID = "MiniGrid-CourseColourGoal-7x7-v0"


def _register() -> None:
    if GYM_ID not in gym.registry:
        gym.register(GYM_ID, entry_point="utils.envs.colour_goal:make_gym_env", kwargs={"size": 5})
    if MINIGRID_ID not in gym.registry:
        gym.register(MINIGRID_ID, entry_point="utils.envs.colour_goal:_make_minigrid_env", kwargs={"size": 5})


# --- the MiniGrid version ---------------------------------------------------------------
def _make_minigrid_env(size: int = 5, max_steps: int | None = None, render_mode: str | None = "rgb_array", **kw):
    class ColourGoalMiniGrid(MiniGridEnv):
        """Two coloured floor tiles in a walled room; the mission names the goal colour.
        Reward 1 - 0.9 t / max_steps for stepping onto it, 0 (and the end) for the other tile."""

        def __init__(self):
            super().__init__(mission_space=MissionSpace(mission_func=lambda color: f"go to the {color} tile",
                                                        ordered_placeholders=[list(COLOUR_NAMES)]),
                             grid_size=size + 2, max_steps=max_steps or 4 * size * 3, see_through_walls=True,
                             render_mode=render_mode, **kw)

        def _gen_grid(self, width, height):
            self.grid = Grid(width, height)
            self.grid.wall_rect(0, 0, width, height)
            self.goal_colour = COLOUR_NAMES[self._rand_int(0, 2)]
            for colour in COLOUR_NAMES:
                self.place_obj(Floor(colour))
            self.place_agent()
            self.mission = f"go to the {self.goal_colour} tile"

        def step(self, action):
            obs, reward, terminated, truncated, info = super().step(action)
            cell = self.grid.get(*self.agent_pos)
            if cell is not None and cell.type == "floor":
                terminated = True
                info["is_success"] = cell.color == self.goal_colour
                reward = self._reward() if info["is_success"] else 0.0
            return obs, reward, terminated, truncated, info

    return ColourGoalMiniGrid()


def make_minigrid_colour_goal(size: int = 5, **kwargs) -> gym.Env:
    """The equivalent MiniGrid task through Gymnasium: a (size+2)-square grid including walls,
    MiniGrid's actions (turn left, turn right, forward, ...) and its egocentric partial
    observation with the mission string. Wrap it (e.g. minigrid.wrappers.FlatObsWrapper)
    before training a vector-input policy on it."""
    if not isinstance(size, int) or size < 3:
        raise CourseError(f"size must be an int >= 3, got {size!r}")
    return gym.make(MINIGRID_ID, size=size, **kwargs)


_register()
