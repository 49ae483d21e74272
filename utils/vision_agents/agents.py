"""The chapter's agents, trained with the course's PPO and DQN, shipped and loaded by name.

| agent                 | environment                         | algorithm | network            |
| --------------------- | ----------------------------------- | --------- | ------------------ |
| `breakout_ppo`        | MinAtar Breakout (`VecBreakout`)    | PPO       | `HookedConvPolicy` |
| `breakout_dqn`        | MinAtar Breakout (`VecBreakout`)    | DQN       | `HookedConvPolicy` |
| `space_invaders_ppo`  | MinAtar Space Invaders (`MinAtarBatch`) | PPO   | `HookedConvPolicy` |
| `acrobot_ppo`         | Gymnasium Acrobot-v1 (`GymVecEnv`)  | PPO       | `HookedMLPPolicy`  |

Every agent ships for the training seeds in `SEEDS` as `data/ch11_<agent>_s<seed>.pt`
(weights stored in float16: a few hundred kB each), with its config, metrics and the command
that rebuilds it (`python -m utils.vision_agents.pretrain ch11_breakout_ppo_s1`) in
`data/manifest.json`. `train_agent(name, seed, steps)` trains one from scratch (the cpu profile
retrains one to show the curve); `load_agent(name, seed)` loads the shipped one after checking
that its architecture matches.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.core import CourseError, set_seed
from utils.envs.gym_vec import GymVecEnv
from utils.envs.minatar import make_minatar
from utils.models.conv_policy import HookedConvPolicy
from utils.models.mlp_policy import HookedMLPPolicy
from utils.rl.dqn import DQNConfig, train_dqn
from utils.rl.ppo import PPOConfig, train_ppo

SEEDS = (0, 1, 2)
MAX_STEPS = 1000          # MinAtar has no time limit; a good Breakout agent would play forever
REGENERATE = "python -m utils.vision_agents.pretrain"


@dataclass
class AgentSpec:
    """Everything that defines one trained agent."""
    env_id: str
    algo: str                       # "ppo" or "dqn"
    steps: int                      # environment steps (frames) of training
    channels: tuple[int, ...] = (16, 16)
    hidden: tuple[int, ...] = (64,)
    algo_kwargs: dict = field(default_factory=dict)

    @property
    def conv(self) -> bool:
        return self.env_id.startswith("minatar-")


AGENTS: dict[str, AgentSpec] = {
    "breakout_ppo": AgentSpec("minatar-breakout", "ppo", 120_000,
                              algo_kwargs=dict(n_envs=32, n_steps=64, lr=2.5e-3, ent_coef=0.01)),
    "breakout_dqn": AgentSpec("minatar-breakout", "dqn", 100_000,
                              algo_kwargs=dict(n_envs=16, buffer_size=100_000, batch_size=64, lr=5e-4, grad_steps=1,
                                               learning_starts=2_000, target_update_every=1_000,
                                               exploration_fraction=0.2, end_eps=0.05)),
    "space_invaders_ppo": AgentSpec("minatar-space_invaders", "ppo", 150_000,
                                    algo_kwargs=dict(n_envs=32, n_steps=64, lr=2.5e-3, ent_coef=0.01)),
    # Acrobot (reward -1 per step) needs many small critic updates: with 4 epochs of 4 minibatches
    # the value never fits the ~-100 returns (value loss stays near 100) and the ReLU policy drifts to
    # constant torque (return -500 on every seed; SB3's PPO with ReLU fails the same way). SB3's
    # defaults (10 epochs, minibatches of 64) reach about -100 within the 150k budget.
    "acrobot_ppo": AgentSpec("Acrobot-v1", "ppo", 150_000, channels=(), hidden=(64, 64),
                             algo_kwargs=dict(n_envs=8, n_steps=256, lr=3e-4, ent_coef=0.01,
                                              n_epochs=10, n_minibatches=32)),
}


def check_agent(name) -> AgentSpec:
    if not isinstance(name, str) or name not in AGENTS:
        raise CourseError(f"unknown agent {name!r}: use one of {', '.join(AGENTS)}")
    return AGENTS[name]


def artifact_name(name: str, seed: int) -> str:
    check_agent(name)
    if seed not in SEEDS:
        raise CourseError(f"agent {name!r} ships for seeds {SEEDS}, got seed={seed!r}: train other seeds with train_agent")
    return f"ch11_{name}_s{seed}"


def make_agent_env(name: str, n_envs: int, seed: int = 0):
    """The environment an agent trains and is evaluated on (MinAtar: sticky actions 0.1, episodes cut at MAX_STEPS)."""
    spec = check_agent(name)
    if spec.conv:
        return make_minatar(spec.env_id[len("minatar-"):], n_envs, seed=seed, max_steps=MAX_STEPS)
    return GymVecEnv(spec.env_id, n_envs, seed=seed)


def build_network(name: str, env=None, seed: int = 0):
    """A freshly initialised network for agent `name` (also the random-init control)."""
    spec = check_agent(name)
    env = env if env is not None else make_agent_env(name, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.conv:
            return HookedConvPolicy(env.obs_shape, env.n_actions, spec.channels, spec.hidden,
                                    value_head=spec.algo == "ppo")
        return HookedMLPPolicy(env.obs_dim, env.n_actions, spec.hidden, value_head=spec.algo == "ppo")


def train_agent(name: str, seed: int = 0, steps: int | None = None, progress: bool = True):
    """Train agent `name` with seed `seed` for `steps` frames (default: the shipped budget).
    Returns (network, training log, seconds)."""
    spec = check_agent(name)
    steps = spec.steps if steps is None else steps
    kw = dict(spec.algo_kwargs)
    env = make_agent_env(name, kw["n_envs"], seed=seed)
    set_seed(seed)
    net = build_network(name, env, seed=seed)
    if spec.algo == "ppo":
        cfg = PPOConfig(env_id=spec.env_id, total_steps=steps, seed=seed, hidden=spec.hidden or (64,), **kw)
        res = train_ppo(cfg, policy=net, env=env, progress=progress)
        return res.policy, res.log, res.seconds
    cfg = DQNConfig(env_id=spec.env_id, total_steps=steps, seed=seed, hidden=spec.hidden or (64,), **kw)
    res = train_dqn(cfg, qnet=net, env=env, progress=progress)
    return res.qnet, res.log, res.seconds


def ship_agent(name: str, seed: int) -> dict:
    """Train agent `name` at its shipped budget and save it (float16 weights) with its manifest entry."""
    art = artifact_name(name, seed)
    spec = check_agent(name)
    t0 = time.perf_counter()
    net, log, seconds = train_agent(name, seed, progress=True)
    ret = evaluate_returns(net, make_agent_env(name, 32, seed=10_000 + seed), 64, greedy=spec.algo == "dqn")
    state = {k: v.half() for k, v in net.state_dict().items()}
    config = {"agent": name, "seed": seed, **asdict(spec)}
    tail = [r for r in log["return"][-10:] if r == r]
    curve = [(int(s), round(float(r), 3)) for s, r in zip(log["env_steps"], log["return"]) if r == r]
    step = max(1, len(curve) // 20)
    metrics = {"train_curve_steps_return": curve[::step] + curve[-1:],
               "train_seconds": round(time.perf_counter() - t0, 1), "eval_mean_return_64_episodes": round(float(ret.mean()), 3),
               "final_train_return": round(float(np.mean(tail)), 3) if tail else None}
    return save_checkpoint(state, art, config, f"{REGENERATE} {art}", metrics)


def load_agent(name: str, seed: int = 0):
    """The shipped agent `name` trained with `seed` (eval mode, float32)."""
    art = artifact_name(name, seed)
    state, entry = load_checkpoint(art)
    spec = check_agent(name)
    if entry["config"].get("steps") != spec.steps or tuple(entry["config"].get("hidden", ())) != spec.hidden:
        raise CourseError(f"{art} was trained with another spec than AGENTS[{name!r}]: regenerate it with `{entry['command']}`")
    net = build_network(name)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval()


@torch.no_grad()
def evaluate_returns(net, env, n_episodes: int, greedy: bool = False, seed: int = 123, fwd_hooks=None) -> np.ndarray:
    """Returns of `n_episodes` episodes of `net` (sampling from its logits, or greedy) in the batched `env`.

    Episodes are counted in the order they finish; every copy keeps playing until enough
    have finished (an interval over these is over episodes of one trained agent)."""
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes <= 0:
        raise CourseError(f"n_episodes must be a positive int, got {n_episodes!r}")
    g = torch.Generator().manual_seed(seed)
    obs = env.reset(seed=seed)
    out: list[float] = []
    while len(out) < n_episodes:
        logits = net.run_with_hooks(obs, fwd_hooks=fwd_hooks or []) if fwd_hooks else net(obs)
        if greedy:
            action = logits.argmax(-1)
        else:
            action = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=g).squeeze(1)
        obs, _, term, trunc, info = env.step(action)
        done = term | trunc
        out += info["episode_return"][done].tolist()
    return np.asarray(out[:n_episodes], np.float64)
