"""MiniGrid's memory task (`MiniGrid-MemoryS7-v0`'s map, the `minigrid` package) for decision transformers.

The agent starts in a small room where a green KEY or BALL lies (`CueRoomMemoryEnv`: MemoryS7
with the start turned towards that object, see its docstring); a hallway leads to a split whose two arms end in a key and a
ball. Reaching the cell next to the object that matches the start room's ends the episode with
MiniGrid's reward `1 - 0.9 t / max_steps`; reaching the other one ends it with 0. The agent sees
an egocentric 7x7 view that walls block, so at the split the start object is out of sight: the
right turn depends on an observation seen earlier (the task of Bloom and Colognese's DT
interpretability work). The episode is cut at `MAX_STEPS` steps (MiniGrid's own limit, 245,
is far beyond what the expert needs) and the agent uses MiniGrid's first three actions only
(turn left, turn right, forward: the others do nothing in this task).

What the course adds on top of MiniGrid:
- `VIEWS`: the finite vocabulary of egocentric views. Every (cell, direction, start object,
  arm layout) is enumerated once and each distinct 7x7x3 image gets an index, so a view is
  a token a decision transformer embeds with a lookup table. `VIEWS.flip_cue[i]` is view i
  with the start-room object swapped (key <-> ball), the counterfactual of the memory.
- `MiniGridMemory(n_envs)`: a batch of the MiniGrid envs behind the course's batched protocol
  (`utils.envs.base`), WITHOUT auto-reset, observation = view index [n], reward in tenths
  (MiniGrid's reward x 10, rounded, so returns-to-go are the integer tokens a DT reads),
  `info["success"]`; `reset(seed, cues=...)` can set every copy's start object.
- `gymnasium.make(GYM_ID)`: the same task for the course's PPO (`utils.rl.ppo` through
  `utils.envs.make_env` and `GymVecEnv`), with a PRIVILEGED flat observation: the one-hot
  view plus the one-hot start object. The PPO agent is the data-collecting expert; it does not
  need memory (a feed-forward policy could not remember). The DT sees the views only.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from minigrid.core.world_object import Ball, Key
from minigrid.envs import MemoryEnv
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, Step, check_actions, check_n_envs

MINIGRID_ID = "MiniGrid-MemoryS7-v0"
GYM_ID = "CourseMiniGridMemoryS7Cue-v0"
LEFT, RIGHT, FORWARD = 0, 1, 2            # MiniGrid's Actions.left, right, forward
ACTION_NAMES = ("turn left", "turn right", "forward")
MAX_STEPS = 16
REWARD_SCALE = 10                          # reward in tenths: RTG tokens are integers 0..10
KEY, BALL = 0, 1                           # the start-room object ("cue")
CUE_CELL = (1, 2)
SPLIT_CELL = (5, 3)                        # where the agent must turn towards one arm


class CueRoomMemoryEnv(MemoryEnv):
    """MiniGrid's MemoryS7 (`minigrid.envs.MemoryEnv`, size 7) with the start moved: the agent
    starts in the start room's middle row at x = 1, 2 or 3 FACING WEST, towards the start
    object, so the object is in view at the first step of every episode (MemoryS7 starts it
    facing east anywhere along the hallway, and from 3 of its 4 start cells the object is
    never seen on the way to the split). To succeed the agent must turn round, walk to the
    split and turn towards the matching arm, with the object long out of sight."""

    def __init__(self, max_steps: int = MAX_STEPS, **kwargs):
        super().__init__(size=7, max_steps=max_steps, **kwargs)

    def _gen_grid(self, width, height):
        super()._gen_grid(width, height)
        self.agent_pos = np.array((self._rand_int(1, 4), height // 2))
        self.agent_dir = 2


def _raw_env(max_steps: int = MAX_STEPS):
    return CueRoomMemoryEnv(max_steps=max_steps)


def _set_cue(env, cue: int) -> None:
    """Put a KEY (0) or BALL (1) in the start room and recompute which arm succeeds."""
    env.grid.set(*CUE_CELL, (Key if cue == KEY else Ball)("green"))
    top, bottom = env.grid.get(5, 1), env.grid.get(5, 5)
    match_top = top.type == ("key" if cue == KEY else "ball")
    env.success_pos, env.failure_pos = ((5, 2), (5, 4)) if match_top else ((5, 4), (5, 2))


def _cue_of(env) -> int:
    return KEY if env.grid.get(*CUE_CELL).type == "key" else BALL


@dataclass
class ViewVocabulary:
    """Every egocentric view of MemoryS7 as an index; `flip_cue` [n] maps a view to the view
    with the start object swapped; `shows_cue` [n] bool: the start object is in sight."""
    images: np.ndarray       # [n, 7, 7, 3] uint8
    flip_cue: Tensor         # [n] long
    shows_cue: Tensor        # [n] bool
    index: dict

    @property
    def n(self) -> int:
        return len(self.images)

    def lookup(self, image: np.ndarray) -> int:
        key = np.asarray(image, np.uint8).tobytes()
        if key not in self.index:
            raise CourseError("a MiniGrid view outside the enumerated vocabulary: use CueRoomMemoryEnv "
                              "(MemoryS7) with its default 7x7 view")
        return self.index[key]


def _enumerate_views() -> ViewVocabulary:
    env = _raw_env()
    env.reset(seed=0)
    cells = [(x, y) for x in range(env.width) for y in range(env.height)
             if (env.grid.get(x, y) is None) and (x, y) != CUE_CELL]
    images, index, pairs = [], {}, []
    top_bottom = {0: (Key, Ball), 1: (Ball, Key)}
    for layout in (0, 1):
        for cue in (KEY, BALL):
            env.grid.set(5, 1, top_bottom[layout][0]("green"))
            env.grid.set(5, 5, top_bottom[layout][1]("green"))
            _set_cue(env, cue)
            for (x, y) in cells:
                for d in range(4):
                    env.agent_pos, env.agent_dir = np.array((x, y)), d
                    img = env.gen_obs()["image"]
                    k = img.tobytes()
                    if k not in index:
                        index[k] = len(images)
                        images.append(img.copy())
                    pairs.append(((layout, x, y, d), cue, index[k]))
    by_state = {}
    for st, cue, i in pairs:
        by_state.setdefault(st, {})[cue] = i
    flip = list(range(len(images)))
    for st, v in by_state.items():
        a, b = v[KEY], v[BALL]
        for src, dst in ((a, b), (b, a)):
            if flip[src] != src and flip[src] != dst:
                raise AssertionError("the cue flip of a view is not unique")
            flip[src] = dst
    flip = torch.tensor(flip)
    return ViewVocabulary(np.stack(images), flip, flip != torch.arange(len(flip)), index)


VIEWS = _enumerate_views()


class MiniGridMemory(BatchedEnv):
    """`n_envs` MiniGrid MemoryS7 envs stepped together, no auto-reset (a finished copy stays
    done, reward 0, until `reset`). Observation: view index [n] (`VIEWS`); reward in tenths."""

    n_actions = 3

    def __init__(self, n_envs: int, seed: int = 0, max_steps: int = MAX_STEPS):
        self.n_envs = check_n_envs(n_envs)
        if not isinstance(max_steps, int) or max_steps < 6:
            raise CourseError(f"max_steps must be an int >= 6 (the shortest success takes 6 steps), got {max_steps!r}")
        self.max_steps, self.seed = max_steps, seed
        self.n_obs = VIEWS.n
        self.envs = [_raw_env(max_steps) for _ in range(self.n_envs)]
        self.done = torch.zeros(self.n_envs, dtype=torch.bool)
        self._resets = 0

    def observe(self) -> Tensor:
        return torch.tensor([VIEWS.lookup(e.gen_obs()["image"]) for e in self.envs])

    @property
    def cue(self) -> Tensor:
        return torch.tensor([_cue_of(e) for e in self.envs])

    @property
    def agent(self) -> Tensor:
        """[n, 3]: x, y, direction of every copy."""
        return torch.tensor([[int(e.agent_pos[0]), int(e.agent_pos[1]), int(e.agent_dir)] for e in self.envs])

    def reset(self, seed: int | None = None, cues: Tensor | None = None) -> Tensor:
        base = (self.seed + 7919 * self._resets) if seed is None else seed
        self._resets += 1
        for i, e in enumerate(self.envs):
            e.reset(seed=int(base) * 100_003 + i)
        if cues is not None:
            cues = torch.as_tensor(cues, dtype=torch.long).reshape(-1)
            if cues.shape != (self.n_envs,) or not ((cues == KEY) | (cues == BALL)).all():
                raise CourseError(f"cues must be {self.n_envs} values in {{0 (key), 1 (ball)}}")
            for e, c in zip(self.envs, cues.tolist()):
                _set_cue(e, c)
        self.done = torch.zeros(self.n_envs, dtype=torch.bool)
        return self.observe()

    def step(self, actions) -> Step:
        a = check_actions(actions, self.n_envs, self.n_actions, "0 turn left, 1 turn right, 2 forward")
        obs = torch.zeros(self.n_envs, dtype=torch.long)
        reward = torch.zeros(self.n_envs)
        term = torch.zeros(self.n_envs, dtype=torch.bool)
        trunc = torch.zeros(self.n_envs, dtype=torch.bool)
        success = torch.zeros(self.n_envs, dtype=torch.bool)
        for i, e in enumerate(self.envs):
            if self.done[i]:
                obs[i] = VIEWS.lookup(e.gen_obs()["image"])
                continue
            o, r, te, tr, _ = e.step(int(a[i]))
            obs[i] = VIEWS.lookup(o["image"])
            reward[i] = round(float(r) * REWARD_SCALE)
            term[i], trunc[i] = te, tr and not te
            success[i] = te and r > 0
        self.done |= term | trunc
        return obs, reward, term, trunc, {"success": success}


class PrivilegedMemoryEnv(gym.Env):
    """One MemoryS7 env for PPO: observation = one-hot view + one-hot start object (flat Box),
    actions Discrete(3), MiniGrid's reward, `info["is_success"]` on every step."""

    metadata = {"render_modes": []}

    def __init__(self, max_steps: int = MAX_STEPS):
        self.env = _raw_env(max_steps)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (VIEWS.n + 2,), np.float32)
        self.action_space = gym.spaces.Discrete(3)

    def _obs(self, image) -> np.ndarray:
        out = np.zeros(VIEWS.n + 2, np.float32)
        out[VIEWS.lookup(image)] = 1
        out[VIEWS.n + _cue_of(self.env)] = 1
        return out

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        o, info = self.env.reset(seed=seed)
        return self._obs(o["image"]), {}

    def step(self, action):
        o, r, te, tr, _ = self.env.step(int(action))
        return self._obs(o["image"]), float(r), te, tr, {"is_success": bool(te and r > 0)}


def privileged_obs(env: MiniGridMemory, views: Tensor) -> Tensor:
    """The PPO agent's observation [n, VIEWS.n + 2] for a batched env's current views."""
    out = torch.zeros(env.n_envs, VIEWS.n + 2)
    out[torch.arange(env.n_envs), views] = 1
    out[torch.arange(env.n_envs), VIEWS.n + env.cue] = 1
    return out


if GYM_ID not in gym.registry:
    gym.register(GYM_ID, entry_point="utils.envs.minigrid_memory:PrivilegedMemoryEnv",
                 kwargs={"max_steps": MAX_STEPS})
