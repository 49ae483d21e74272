"""Recurrent PPO with truncated backpropagation through time (chapter 08's DRC agents).

The same algorithm as utils.rl.ppo, with one difference: the policy carries a state. Rollouts
store the state each environment had at the start of every BPTT window of `bptt_len` steps
(detached), and the update re-runs each window from that state, resetting it where an episode
began. The update itself is utils.rl.ppo's: `compute_gae` for the advantages and `ppo_update`
for the clipped loss, whose "rows" are here whole windows (logp_old, advantages and returns of
shape [n_windows, bptt_len]), so a minibatch is a set of windows and the loss means are over
their steps.

Any agent with `initial_state(batch, device)` and `step(obs, state) -> (logits, value, state)`
trains here: utils.models.drc.DRC and its feed-forward control ConvBaseline.

    cfg = RecurrentPPOConfig(total_steps=100_000)
    result = train_recurrent_ppo(cfg, model, env)

References: Schulman et al. 2017 (PPO); Guez et al. 2019 (DRC agents trained with recurrent
actor-critic); Huang et al. 2022 (CleanRL's LSTM PPO details).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from utils.core import CourseError, check_fields, set_seed
from utils.rl.common import EpisodeLog
from utils.rl.ppo import PPOResult, compute_gae, ppo_update

State = tuple[Tensor, ...]


@dataclass
class RecurrentPPOConfig:
    total_steps: int = 100_000
    n_envs: int = 32
    n_steps: int = 32             # rollout length per env
    bptt_len: int = 8             # truncated-BPTT window; must divide n_steps
    n_epochs: int = 3
    n_minibatches: int = 4        # minibatches of windows
    lr: float = 5e-4
    anneal_lr: bool = True
    gamma: float = 0.97
    gae_lambda: float = 0.95
    clip_coef: float = 0.1
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    seed: int = 0

    @property
    def batch_size(self) -> int:
        return self.n_envs * self.n_steps

    @property
    def n_windows(self) -> int:
        return self.n_envs * (self.n_steps // self.bptt_len)

    @property
    def n_iterations(self) -> int:
        return max(1, self.total_steps // self.batch_size)

    def validate(self) -> "RecurrentPPOConfig":
        check_fields(self, positive_int=("total_steps", "n_envs", "n_steps", "bptt_len", "n_epochs", "n_minibatches"),
                     positive=("lr", "clip_coef"), unit=("gamma", "gae_lambda"),
                     nonneg=("ent_coef", "vf_coef", "max_grad_norm"), nonneg_int=("seed",))
        if self.n_steps % self.bptt_len:
            raise CourseError(f"bptt_len = {self.bptt_len} must divide n_steps = {self.n_steps}")
        if self.n_windows % self.n_minibatches:
            raise CourseError(f"{self.n_windows} BPTT windows (n_envs * n_steps / bptt_len) are not divisible by "
                              f"n_minibatches = {self.n_minibatches}")
        if self.total_steps < self.batch_size:
            raise CourseError(f"total_steps = {self.total_steps} is less than one rollout (n_envs * n_steps = {self.batch_size})")
        return self


def reset_state(state: State, starts: Tensor) -> State:
    """The state with the rows where `starts` [B] is true zeroed (a new episode begins there)."""
    if not len(state):
        return state
    keep = (1.0 - starts.float()).to(state[0].device)
    return tuple(s * keep.view(-1, *([1] * (s.ndim - 1))) for s in state)


def unroll(model: nn.Module, obs: Tensor, starts: Tensor, state: State,
           reset_fn: Callable[[State, Tensor], State] = reset_state) -> tuple[Tensor, Tensor, State]:
    """Run `model` over a sequence: obs [T, B, ...], starts [T, B] (1 where an episode begins at
    step t: the state is reset before that step, by `reset_fn`), from `state`. Returns (logits
    [T, B, A], values [T, B], final state)."""
    if obs.shape[:2] != starts.shape:
        raise CourseError(f"unroll: obs [T, B, ...] {tuple(obs.shape)} and starts [T, B] {tuple(starts.shape)} disagree")
    logits, values = [], []
    for t in range(obs.shape[0]):
        state = reset_fn(state, starts[t])
        lg, v, state = model.step(obs[t], state)
        logits.append(lg)
        values.append(v)
    return torch.stack(logits), torch.stack(values), state


@dataclass
class RecurrentRollout:
    obs: Tensor        # [T, N, C, H, W]
    actions: Tensor    # [T, N]
    logp: Tensor       # [T, N]
    values: Tensor     # [T, N]
    rewards: Tensor    # [T, N]
    dones: Tensor      # [T, N] 1.0 where the episode ended at step t
    starts: Tensor     # [T, N] 1.0 where an episode began at step t (state reset before it)
    window_states: list  # per window start k*bptt_len: the state (before reset) at that step
    last_value: Tensor  # [N]
    next_obs: Tensor
    next_state: State
    next_starts: Tensor  # [N]


@torch.no_grad()
def collect_recurrent_rollout(model: nn.Module, env, obs: Tensor, state: State, starts: Tensor, n_steps: int,
                              bptt_len: int, episodes: EpisodeLog | None = None,
                              reset_fn: Callable[[State, Tensor], State] = reset_state) -> RecurrentRollout:
    """Roll the current policy out for `n_steps` in every env, carrying the recurrent state."""
    T, N = n_steps, obs.shape[0]
    obs_buf = torch.zeros(T, *obs.shape)
    act_buf = torch.zeros(T, N, dtype=torch.long)
    logp_buf, val_buf, rew_buf, done_buf, start_buf = (torch.zeros(T, N) for _ in range(5))
    window_states = []
    for t in range(T):
        if t % bptt_len == 0:
            window_states.append(tuple(s.clone() for s in state))
        start_buf[t] = starts.float()
        state = reset_fn(state, starts)
        logits, value, state = model.step(obs, state)
        dist = torch.distributions.Categorical(logits=logits)
        action = dist.sample()
        next_obs, reward, term, trunc, info = env.step(action)
        done = term | trunc
        obs_buf[t], act_buf[t], logp_buf[t], val_buf[t] = obs, action, dist.log_prob(action), value
        rew_buf[t], done_buf[t] = reward, done.float()
        if episodes is not None:
            episodes.add_episodes(info, done)
        obs, starts = next_obs, done
    last_value = model.step(obs, reset_fn(state, starts))[1]
    return RecurrentRollout(obs_buf, act_buf, logp_buf, val_buf, rew_buf, done_buf, start_buf, window_states,
                            last_value, obs, state, starts)


def _windows(x: Tensor, L: int) -> Tensor:
    """[T, N, ...] -> [N * (T // L), L, ...]: window w = (env n, chunk k) at row k * N + n."""
    T, N = x.shape[:2]
    return x.reshape(T // L, L, N, *x.shape[2:]).transpose(1, 2).reshape(T // L * N, L, *x.shape[2:])


def train_recurrent_ppo(cfg: RecurrentPPOConfig, model: nn.Module, env, progress: bool = True,
                        callback: Callable[[int, nn.Module, dict], None] | None = None,
                        reset_fn: Callable[[State, Tensor], State] = reset_state) -> PPOResult:
    """Train a recurrent (or stateless) agent with PPO and truncated BPTT on the batched `env`;
    `reset_fn(state, starts)` zeroes the state where an episode begins (in the rollouts and in the
    unrolls the gradient goes through)."""
    cfg.validate()
    if env.n_envs != cfg.n_envs:
        raise CourseError(f"the env has {env.n_envs} envs but the config says n_envs={cfg.n_envs}")
    if not hasattr(model, "step") or not hasattr(model, "initial_state"):
        raise CourseError(f"{type(model).__name__} has no step/initial_state: use utils.models.drc.DRC or ConvBaseline")
    set_seed(cfg.seed)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
    episodes = EpisodeLog(("policy_loss", "value_loss", "entropy"), 256, None)
    obs = env.reset(seed=cfg.seed)
    state = model.initial_state(cfg.n_envs)
    starts = torch.ones(cfg.n_envs, dtype=torch.bool)
    L = cfg.bptt_len
    if callback is not None:
        callback(0, model, episodes.log)
    bar = tqdm(range(cfg.n_iterations), desc="recurrent PPO", disable=not progress, mininterval=1.0)
    for it in bar:
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.lr * (1.0 - it / cfg.n_iterations)
        ro = collect_recurrent_rollout(model, env, obs, state, starts, cfg.n_steps, L, episodes, reset_fn)
        obs, state, starts = ro.next_obs, ro.next_state, ro.next_starts
        adv = compute_gae(ro.rewards, ro.values, ro.dones, ro.last_value, cfg.gamma, cfg.gae_lambda)
        w_obs, w_act, w_starts = _windows(ro.obs, L), _windows(ro.actions, L), _windows(ro.starts, L)
        w_state = tuple(torch.cat([ws[i] for ws in ro.window_states]) for i in range(len(ro.window_states[0])))

        def evaluate(mb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            s0 = tuple(s[mb] for s in w_state)
            logits, values, _ = unroll(model, w_obs[mb].transpose(0, 1), w_starts[mb].transpose(0, 1), s0, reset_fn)
            dist = torch.distributions.Categorical(logits=logits.transpose(0, 1))
            return dist.log_prob(w_act[mb]), dist.entropy().mean(), values.transpose(0, 1)

        stats = ppo_update(evaluate, _windows(ro.logp, L), _windows(adv, L), _windows(adv + ro.values, L),
                           optimizer, model.parameters(), n_epochs=cfg.n_epochs,
                           minibatch_size=cfg.n_windows // cfg.n_minibatches, clip_coef=cfg.clip_coef,
                           vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
                           norm_adv=cfg.norm_adv)
        episodes.row((it + 1) * cfg.batch_size, policy_loss=stats["policy_loss"], value_loss=stats["value_loss"],
                     entropy=stats["entropy"])
        if callback is not None:
            callback(it + 1, model, episodes.log)
        if progress:
            bar.set_postfix(**episodes.postfix())
    bar.close()
    model.eval()
    return PPOResult(model, episodes.log, cfg, time.perf_counter() - episodes.start)
