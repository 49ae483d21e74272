"""Every environment of the course, behind one batched protocol (see `utils.envs.base`).

| module          | environment                                   | chapter |
| --------------- | --------------------------------------------- | ------- |
| `cue_corridor`  | a cued corridor with distractor inputs        | 00      |
| `colour_goal`   | colour-goal gridworld (+ Gymnasium, MiniGrid) | 01      |
| `probe`         | five probe environments with known values     | 01      |
| `dark_room`     | Dark Room (goal never observed)               | 02      |
| `bandits`       | Bernoulli bandits                             | 02      |
| `tictactoe`     | tic-tac-toe, exact minimax, a batched game    | 03, 04, 05 |
| `connect_four`  | 4x5 Connect Four, exact solver, a batched game | 05      |
| `gym_vec`       | any flat-Box, Discrete Gymnasium id           | 01      |
| `graph_walk`    | shortest paths on a graph (the DT paper's toy) | 07      |
| `memory_corridor` | a cue to remember until a junction          | 07      |
| `minigrid_memory` | MiniGrid MemoryS7's map, views as tokens    | 07      |
| `minatar`       | MinAtar games batched; Breakout vectorised    | 11      |
| `atari`         | Pong through ale-py (Karpathy's frames)       | 11      |
| `maze`          | procgen-Maze-like mazes, cheese top-right in training | 06 |
| `monster_gridworld` | Shah et al.'s shields, apples and monsters | 06      |
| `coin_run`      | CoinRun reduced: the coin at the end of the level | 06  |
| `sokoban`       | small Sokoban rooms by reverse play, BFS solver | 08      |

`make_env(name, n_envs, seed)` builds the ones PPO and DQN train on by name.
"""
from __future__ import annotations

import gymnasium as gym

from utils.core import CourseError
from utils.envs.base import BatchedEnv, GymnasiumEnv, check_actions
from utils.envs.colour_goal import ColourGoalGrid
from utils.envs.gym_vec import GymVecEnv
from utils.envs.minatar import GAMES as MINATAR_GAMES, make_minatar
from utils.envs.probe import PROBE_ENVS, ProbeEnv

GOAL_MISGEN_ENVS = ("maze", "monster_gridworld", "coin_run")  # chapter 06
MINATAR_ENVS = (*(f"minatar-{g}" for g in MINATAR_GAMES), "atari-pong")  # chapter 11
COURSE_ENVS = ("colour_goal", *PROBE_ENVS, *GOAL_MISGEN_ENVS, *MINATAR_ENVS)


def check_env_name(env_id: str) -> None:
    """Raise the one-line CourseError of make_env for an unknown name, without building anything."""
    if env_id not in COURSE_ENVS and not (isinstance(env_id, str) and env_id in gym.registry):
        raise CourseError(f"unknown environment {env_id!r}: use one of {', '.join(COURSE_ENVS)} or a Gymnasium id such as 'CartPole-v1'")


def make_env(env_id: str, n_envs: int, seed: int = 0, **kwargs) -> BatchedEnv:
    """A batched environment by name: 'colour_goal' (kwargs: size, max_steps), a probe
    environment, or a Gymnasium id such as 'CartPole-v1'."""
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs <= 0:
        raise CourseError(f"n_envs must be a positive int, got {n_envs!r}")
    check_env_name(env_id)
    if env_id == "colour_goal":
        return ColourGoalGrid(n_envs, seed=seed, **kwargs)
    if env_id in PROBE_ENVS:
        return ProbeEnv(env_id, n_envs, seed=seed)
    if env_id.startswith("minatar-"):
        return make_minatar(env_id[len("minatar-"):], n_envs, seed=seed, **kwargs)
    if env_id == "atari-pong":
        from utils.envs.atari import AtariPong  # ale-py loads only when Pong is asked for
        return AtariPong(n_envs, seed=seed, **kwargs)
    if env_id in GOAL_MISGEN_ENVS:  # chapter 06, imported here so other chapters never load them
        import importlib
        module = importlib.import_module(f"utils.envs.{env_id}")
        return module.ENV_CLASS(n_envs, seed=seed, **kwargs)
    return GymVecEnv(env_id, n_envs, seed=seed, **kwargs)


__all__ = ["COURSE_ENVS", "BatchedEnv", "GymnasiumEnv", "check_actions", "check_env_name", "make_env"]
