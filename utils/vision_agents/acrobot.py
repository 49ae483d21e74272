"""Interpreting the Acrobot agents (problem 8.16): physical variables, probes, and steering.

Acrobot-v1's observation is [cos t1, sin t1, cos t2, sin t2, w1, w2] (t1: the first link's angle
from hanging down, t2: the second link's angle relative to the first, w1 and w2 their angular
velocities); the action is the torque on the joint between the links: 0 (-1), 1 (0), 2 (+1).

- `acrobot_energy(obs)`: the arm's total mechanical energy (kinetic + potential, Gymnasium's
  masses, lengths and inertias; zero potential at the pivot). Swinging up means pumping it in.
- `collect_acrobot(net, ...)`: the agent's own frames, with episode ids (the unit of grouped splits).
- `acrobot_labels(obs)`: the probe labels: energy in three equal groups, and the signs of w1, w2.
- `steering_effect(net, obs, layer, direction)`: how far adding +/- the direction at `layer`
  moves the torque preference P(+1) - P(-1), half the difference of the two (signed).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError

# Gymnasium's AcrobotEnv constants
M1 = M2 = 1.0
L1 = 1.0
LC1 = LC2 = 0.5
I1 = I2 = 1.0
G = 9.8
TORQUE = {0: -1.0, 1: 0.0, 2: 1.0}
VARIABLES = ("energy", "w1 sign", "w2 sign")


def _obs(obs) -> Tensor:
    x = torch.as_tensor(obs, dtype=torch.float64)
    if x.ndim != 2 or x.shape[1] != 6:
        raise CourseError(f"Acrobot observations are [n, 6] (cos t1, sin t1, cos t2, sin t2, w1, w2), got "
                          f"{tuple(x.shape)}")
    return x


def acrobot_energy(obs) -> np.ndarray:
    """Total mechanical energy [n] of the arm from Acrobot-v1 observations [n, 6] (joules in the env's
    units; the hanging, resting arm has the minimum, -(M1 LC1 + M2 (L1 + LC2)) G)."""
    x = _obs(obs)
    c1, s1, c2, s2, w1, w2 = x.unbind(1)
    cos12 = c1 * c2 - s1 * s2               # cos(t1 + t2)
    d1 = M1 * LC1 ** 2 + M2 * (L1 ** 2 + LC2 ** 2 + 2 * L1 * LC2 * c2) + I1 + I2
    d2 = M2 * (LC2 ** 2 + L1 * LC2 * c2) + I2
    kinetic = 0.5 * d1 * w1 ** 2 + d2 * w1 * w2 + 0.5 * (M2 * LC2 ** 2 + I2) * w2 ** 2
    potential = -M1 * G * LC1 * c1 - M2 * G * (L1 * c1 + LC2 * cos12)
    return (kinetic + potential).numpy()


def acrobot_labels(obs, seed: int = 0) -> dict[str, np.ndarray]:
    """{"energy": three equal groups by rank (0 low .. 2 high), "w1 sign", "w2 sign": 1 if positive}."""
    from utils.vision_agents.interp import terciles

    x = _obs(obs)
    return {"energy": terciles(acrobot_energy(x), seed), "w1 sign": (x[:, 4] > 0).long().numpy(),
            "w2 sign": (x[:, 5] > 0).long().numpy()}


@torch.no_grad()
def collect_acrobot(net, n_envs: int = 8, n_steps: int = 300, seed: int = 0) -> dict:
    """Play `net` (sampling its policy) in `n_envs` Acrobot-v1 copies for `n_steps` steps: {"obs" [N, 6],
    "action" [N], "episode" [N] (a distinct id per episode)}."""
    from utils.envs.gym_vec import GymVecEnv

    if n_envs <= 0 or n_steps <= 0:
        raise CourseError(f"collect_acrobot needs positive n_envs and n_steps, got {n_envs}, {n_steps}")
    env = GymVecEnv("Acrobot-v1", n_envs, seed=seed)
    g = torch.Generator().manual_seed(seed)
    obs = env.reset(seed=seed)
    episode, next_id = np.arange(n_envs), n_envs
    rows: dict[str, list] = {"obs": [], "action": [], "episode": []}
    for _ in range(n_steps):
        action = torch.multinomial(torch.softmax(net(obs).float(), -1), 1, generator=g).squeeze(1)
        rows["obs"].append(obs)
        rows["action"].append(action)
        rows["episode"].append(episode.copy())
        obs, _, term, trunc, _ = env.step(action)
        for i in np.flatnonzero((term | trunc).numpy()):
            episode[i], next_id = next_id, next_id + 1
    env.close()
    return {"obs": torch.cat(rows["obs"]), "action": torch.cat(rows["action"]),
            "episode": np.concatenate(rows["episode"])}


def mean_difference(acts: Tensor, labels) -> Tensor:
    """Mean of the activations [n, d] where labels == 1 minus where labels == 0: a direction [d]."""
    a = acts.flatten(1).double()
    y = torch.as_tensor(np.asarray(labels)).long()
    if not ((y == 0).any() and (y == 1).any()):
        raise CourseError("mean_difference needs both classes (0 and 1) in the labels")
    return (a[y == 1].mean(0) - a[y == 0].mean(0)).float()


@torch.no_grad()
def steering_effect(net, obs: Tensor, layer: str, direction: Tensor) -> float:
    """Half the difference of the mean torque preference P(+1) - P(-1) when `direction` [d] is added to
    and subtracted from the activation at `layer` (signed: positive means + pushes towards +1 torque)."""
    d = direction.flatten().float()

    def pref(sign):
        hook = lambda act, hook: act + sign * d.view(1, -1).to(act.dtype)  # noqa: E731
        p = torch.softmax(net.run_with_hooks(obs, fwd_hooks=[(layer, hook)]).float(), -1)
        return (p[:, 2] - p[:, 0]).mean()

    return float(0.5 * (pref(1.0) - pref(-1.0)))


def rescaled(direction: Tensor, norm: float) -> Tensor:
    """`direction` scaled to `norm` (a control direction of the claim's length)."""
    direction = direction.flatten().float()
    return direction * (norm / (float(direction.norm()) + 1e-12))
