"""The cue corridor of the orientation chapter.

Positions 0..length-1; a cue in the observation says whether the goal is the left end or
the right end. The agent starts at a random inner cell, moves LEFT or RIGHT, and gets +1 at
the cued end, -1 at the other end, 0 on timeout (truncated). The observation is
[one-hot position (length), cue reading (2), n_noise distractor readings]: the distractors
are Gaussian noise the agent must learn to ignore (they also stop a probe from separating
every observation trivially). Batched in torch with auto-reset (see `utils.envs.base`).

The cue is *noisy*: each episode draws one reading, the cue's one-hot plus Gaussian noise of
standard deviation `cue_noise`, and shows it at every step of that episode. When the noise
points the other way, no policy can tell, so even the best policy (go towards the larger
reading) fails in a fraction of episodes (`bayes_success`): the task has no ceiling at 1 that
a trained agent could sit on, and a random policy (which mostly times out in a corridor this
long) is far below it. `cue_noise=0` gives the clean one-hot cue.

`cue=LEFT` or `cue=RIGHT` fixes the cue of every episode (for steering experiments);
`flip_cue` builds the counterfactual observation (same position and distractors, other cue);
`random_walk_episodes` collects observations from random-action episodes, each tagged with
its episode (the group of a leak-free probe split).
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, Step, check_actions, check_n_envs

LEFT, RIGHT = 0, 1
ACTION_NAMES = ("left", "right")
LENGTH = 11       # cells; the agent starts on one of the LENGTH - 2 inner cells
MAX_STEPS = 16    # the episode is truncated after this many steps
CUE_NOISE = 0.6   # standard deviation of the noise on each cue entry (one draw per episode)
N_NOISE = 6       # distractor inputs


class CueCorridor(BatchedEnv):
    n_actions = 2

    def __init__(self, n_envs: int, length: int = LENGTH, max_steps: int = MAX_STEPS, seed: int = 0,
                 n_noise: int = N_NOISE, cue: int | None = None, cue_noise: float = CUE_NOISE):
        self.n_envs = check_n_envs(n_envs)
        if length < 4:
            raise CourseError(f"length must be at least 4 (two ends and room to move), got {length}")
        if cue not in (None, LEFT, RIGHT):
            raise CourseError(f"cue must be None (random), LEFT (0) or RIGHT (1), got {cue!r}")
        if not cue_noise >= 0:
            raise CourseError(f"cue_noise must be >= 0 (0: a clean one-hot cue), got {cue_noise}")
        self.fixed_cue, self.cue_noise = cue, float(cue_noise)
        self.length, self.max_steps, self.n_noise = length, max_steps, n_noise
        self.g = torch.Generator().manual_seed(seed)
        self.obs_dim = length + 2 + n_noise
        self.pos = torch.zeros(self.n_envs, dtype=torch.long)
        self.cue = torch.zeros(self.n_envs, dtype=torch.long)
        self.cue_reading = torch.zeros(self.n_envs, 2)
        self.t = torch.zeros(self.n_envs, dtype=torch.long)
        self.ep_return = torch.zeros(self.n_envs)

    def observe(self) -> Tensor:
        noise = torch.randn(self.n_envs, self.n_noise, generator=self.g)
        return encode(self.pos, self.cue, self.length, noise, self.n_noise, self.cue_reading)

    def _reset_where(self, mask: Tensor) -> None:
        k = int(mask.sum())
        self.pos[mask] = torch.randint(1, self.length - 1, (k,), generator=self.g)
        self.cue[mask] = torch.randint(0, 2, (k,), generator=self.g)
        if self.fixed_cue is not None:  # draw anyway, so a fixed cue leaves positions and noise unchanged
            self.cue[mask] = self.fixed_cue
        reading_noise = torch.randn(k, 2, generator=self.g) * self.cue_noise
        self.cue_reading[mask] = torch.nn.functional.one_hot(self.cue[mask], 2).float() + reading_noise
        self.t[mask] = 0
        self.ep_return[mask] = 0

    def reset(self, seed: int | None = None) -> Tensor:
        if seed is not None:
            self.g.manual_seed(seed)
        self._reset_where(torch.ones(self.n_envs, dtype=torch.bool))
        return self.observe()

    def step(self, actions) -> Step:
        actions = check_actions(actions, self.n_envs, self.n_actions, "0 (left) or 1 (right)")
        self.pos = (self.pos + torch.where(actions == RIGHT, 1, -1)).clamp(0, self.length - 1)
        self.t += 1
        at_left, at_right = self.pos == 0, self.pos == self.length - 1
        goal_right = self.cue == RIGHT
        reward = torch.zeros(self.n_envs)
        success = (at_right & goal_right) | (at_left & ~goal_right)
        reward[success] = 1.0
        reward[(at_left & goal_right) | (at_right & ~goal_right)] = -1.0
        terminated = at_left | at_right
        truncated = ~terminated & (self.t >= self.max_steps)
        self.ep_return += reward
        info = {"episode_return": self.ep_return.clone(), "episode_length": self.t.clone(), "success": success}
        self._reset_where(terminated | truncated)
        return self.observe(), reward, terminated, truncated, info


def encode(pos: Tensor, cue: Tensor, length: int = LENGTH, noise: Tensor | None = None,
           n_noise: int = N_NOISE, cue_reading: Tensor | None = None) -> Tensor:
    """Observations [batch, length + 2 + n_noise] for positions and cues [batch]; the
    distractor readings are `noise` [batch, n_noise] (zeros if None) and the cue entries are
    `cue_reading` [batch, 2] (the clean one-hot of `cue` if None)."""
    pos, cue = torch.as_tensor(pos).long(), torch.as_tensor(cue).long()
    if pos.shape != cue.shape or pos.ndim != 1:
        raise CourseError(f"pos and cue must be 1-D of the same length, got {tuple(pos.shape)} and {tuple(cue.shape)}")
    if (pos < 0).any() or (pos >= length).any() or (cue < 0).any() or (cue > 1).any():
        raise CourseError(f"positions must be in [0, {length}) and cues in {{0, 1}}")
    if noise is None:
        noise = torch.zeros(len(pos), n_noise)
    if noise.ndim != 2 or len(noise) != len(pos):
        raise CourseError(f"noise must have shape [{len(pos)}, n_noise], got {tuple(noise.shape)}")
    if cue_reading is None:
        cue_reading = torch.nn.functional.one_hot(cue, 2)
    if cue_reading.shape != (len(pos), 2):
        raise CourseError(f"cue_reading must have shape [{len(pos)}, 2], got {tuple(cue_reading.shape)}")
    parts = [torch.nn.functional.one_hot(pos, length).float(), cue_reading.float(), noise.float()]
    return torch.cat(parts, -1)


def flip_cue(obs: Tensor, length: int = LENGTH) -> Tensor:
    """The counterfactual observations: a copy of `obs` [batch, length + 2 + n_noise] with the
    two cue entries swapped (goal left <-> goal right), position and distractors unchanged."""
    if obs.ndim != 2 or obs.shape[1] < length + 2:
        raise CourseError(f"obs must have shape [batch, {length} + 2 + n_noise], got {tuple(obs.shape)}")
    out = obs.clone()
    out[:, length], out[:, length + 1] = obs[:, length + 1], obs[:, length]
    return out


def random_walk_episodes(n_episodes: int, length: int = LENGTH, n_noise: int = N_NOISE, seed: int = 0,
                         max_steps: int = MAX_STEPS, cue_noise: float = CUE_NOISE) -> dict[str, Tensor]:
    """Every observation of `n_episodes` episodes of a random-action policy, flattened:
    obs [n, obs_dim], pos [n], cue [n] (the true cue), read [n] (the side the noisy reading
    favours: what the agent can know) and episode [n] (the id of the episode each came from:
    the unit that must not straddle a probe's train/test split)."""
    env = CueCorridor(n_episodes, length, max_steps, seed=seed, n_noise=n_noise, cue_noise=cue_noise)
    g = torch.Generator().manual_seed(seed + 1)
    obs, active = env.reset(), torch.ones(n_episodes, dtype=torch.bool)
    ids = torch.arange(n_episodes)
    rows: dict[str, list[Tensor]] = {"obs": [], "pos": [], "cue": [], "read": [], "episode": []}
    for _ in range(max_steps):
        read = env.cue_reading.argmax(-1)
        for key, val in (("obs", obs), ("pos", env.pos), ("cue", env.cue), ("read", read),
                         ("episode", ids)):
            rows[key].append(val[active].clone())
        obs, _, term, trunc, _ = env.step(torch.randint(0, 2, (n_episodes,), generator=g))
        active &= ~(term | trunc)
        if not active.any():
            break
    return {k: torch.cat(v) for k, v in rows.items()}


def bayes_success(n_episodes: int = 20000, cue_noise: float = CUE_NOISE, seed: int = 0) -> float:
    """The best success rate any policy can reach: the fraction of episodes whose noisy cue
    reading favours the true side (the best policy walks straight towards the larger reading,
    and the corridor's inner cells are all within MAX_STEPS of either end)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_episodes, 2, generator=g) * cue_noise
    return float((1.0 + noise[:, 1] - noise[:, 0] > 0).float().mean())
