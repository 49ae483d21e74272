"""A generic experiment harness: any Gymnasium environment, any adapted agent, one call per step.

    env_fn = gym_env("MiniGrid-DoorKey-5x5-v0", wrappers=[ImgObsWrapper, FlattenObservation])
    data = collect(agent, env_fn, n_episodes=60, seed=0, state_fn=doorkey_state)
    y = label(data, lambda info, obs: info["has_key"])          # the variable of interest
    probe = probe_variable(agent, data, y, "mlp_extractor.policy_net.3.hook_out")
    pairs = counterfactual_pairs(data, y, match=data.step)      # nearest obs, other value, other action
    patch = patch_pairs(agent, pairs, "mlp_extractor.policy_net.3.hook_out")
    steer = steer_variable(agent, data, y, pairs, "mlp_extractor.policy_net.3.hook_out")
    spec = steering_controls(agent, data, y, pairs, hook, steer, nuisance={"door open": y_door})

`agent` is an `utils.interp.adapters.AdaptedPolicy` (or any HookedRootModule returning logits).
`env` is a Gymnasium id, a function that builds an env, an env, or a Stable-Baselines3 VecEnv
(frame stacks included: the agent takes the stacked frames in either image layout). Recurrent
agents (sb3-contrib RecurrentPPO) carry their hidden state through each episode; what they were
given at each step (observation, state, episode start) is kept as `data.inputs`, and every
function below feeds the agent those.

Every result carries its interval, the unit that interval resamples, and its control:

- probe: held-out accuracy with a split by EPISODE (95% bootstrap over test episodes), beside
  the majority class, shuffled labels and the same probe on a random-init copy of the agent
  (the agent's own initialisation);
- patch: the fraction of the clean-vs-corrupt logit difference recovered on held-out pairs by
  the top-k units (chosen on discovery pairs) vs k random units (bootstrap over test pairs);
- steer: adding the variable's mean-difference direction (from discovery episodes) to the
  corrupt observation of held-out pairs: the fraction of the clean-vs-corrupt logit gap it
  closes, vs random directions of the same norm (paired bootstrap over test pairs);
- steering_controls: the same steering along the directions of correlated nuisance variables,
  of the same method on shuffled labels, and of variance-matched random directions: the
  specific controls (`utils.interp.controls.specificity_verdict` decides over seeds).
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError
from utils.interp.attribution import logit_diff
from utils.interp.controls import SHUFFLED, VARIANCE_MATCHED, shuffled_labels, variance_matched_random
from utils.interp.hooks import cache_activations, check_names
from utils.interp.patching import heldout_unit_patching
from utils.interp.probes import ProbeReport, probe_with_baselines, train_probe
from utils.interp.steering import mean_difference, norm_matched_random
from utils.stats import bootstrap_statistic, fmt_ci, wilson_ci

_PLUGINS = ("minigrid", "ale_py")   # packages whose import registers more Gymnasium ids


# ------------------------------------------------------------------ environments
def check_env_id(env_id: str) -> None:
    """A one-line CourseError for a Gymnasium id that is not registered, naming the closest ones."""
    for mod in _PLUGINS:
        try:
            __import__(mod)
        except ImportError:  # pragma: no cover - pinned
            pass
    if not isinstance(env_id, str) or env_id not in gym.registry:
        ids = sorted(gym.registry)
        close = difflib.get_close_matches(str(env_id), ids, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else f"e.g. {', '.join(ids[:5])}"
        raise CourseError(f"{env_id!r} is not a registered Gymnasium id ({len(ids)} are; {hint}): register yours with "
                          "gymnasium.register or pass a function that builds the env")


def gym_env(env_id: str, wrappers: Sequence[Callable] = (), **kwargs) -> Callable[[], gym.Env]:
    """A function that builds `gym.make(env_id, **kwargs)` wrapped in `wrappers` (in order), after
    checking the id is registered."""
    check_env_id(env_id)

    def make() -> gym.Env:
        env = gym.make(env_id, **kwargs)
        for w in wrappers:
            env = w(env)
        return env

    make.env_id = env_id
    return make


def _is_vec_env(env) -> bool:
    try:
        from stable_baselines3.common.vec_env import VecEnv
    except ImportError:  # pragma: no cover - pinned
        return False
    return isinstance(env, VecEnv)


def _open_env(env):
    """(an env or VecEnv, whether collect opened it and must close it)."""
    if isinstance(env, str):
        return gym_env(env)(), True
    if isinstance(env, gym.Env) or _is_vec_env(env):
        return env, False
    if callable(env):
        try:
            made = env()
        except CourseError:
            raise
        except Exception as e:
            raise CourseError(f"the env function failed with {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
        if not (isinstance(made, gym.Env) or _is_vec_env(made)):
            raise CourseError(f"the env function returned a {type(made).__name__}, not a Gymnasium env or an SB3 VecEnv")
        return made, True
    raise CourseError(f"env must be a Gymnasium id, a function that builds an env, an env or an SB3 VecEnv, got "
                      f"{type(env).__name__}")


# ------------------------------------------------------------------ collecting
@dataclass
class Episodes:
    """One row per step: what the agent saw, did, and computed."""

    obs: Tensor          # [N, ...] observations, as the env gave them to the agent
    logits: Tensor       # [N, n_actions]
    value: Tensor | None  # [N] critic's value (None if the agent has none)
    action: Tensor       # [N] action taken (sampled, or greedy with greedy=True)
    reward: Tensor       # [N] reward received after the action
    episode: Tensor      # [N] episode index (the group for splits)
    step: Tensor         # [N] step within the episode
    info: list           # [N] dicts: the env's info for this observation, merged with state_fn(env)
    returns: Tensor      # [n_episodes] episode returns
    acts: dict = field(default_factory=dict)   # {hook name: [N, ...]} cached activations
    inputs: Tensor | None = None   # [N, ...] what the agent was given, when not obs (recurrent: agent.pack rows)

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def greedy(self) -> Tensor:
        return self.logits.argmax(-1)

    @property
    def agent_inputs(self) -> Tensor:
        """What to give the agent to reproduce each step: `inputs` for a recurrent agent, else `obs`."""
        return self.obs if self.inputs is None else self.inputs


def _obs_tensor(obs, obs_fn) -> Tensor:
    if obs_fn is not None:
        obs = obs_fn(obs)
    if isinstance(obs, dict):
        raise CourseError(f"the env returns dict observations (keys {list(obs)}): wrap it (e.g. minigrid's ImgObsWrapper "
                          "and FlattenObservation) or pass obs_fn= that returns an array")
    return torch.as_tensor(np.asarray(obs))


def _recurrent(agent) -> bool:
    return bool(getattr(agent, "recurrent", False))


def _act(agent, x: Tensor, state, starts: Tensor):
    """(logits [n, A], value [n] or None, next state, step input [n, ...]) for a batch of observations."""
    if _recurrent(agent):
        inputs = agent.pack(x, state, starts)
        logits, value, state = agent.step(x, state, starts)
        return logits, value, state, inputs
    if _takes_value(agent):
        logits, value = agent(x, return_value=True)
    else:
        logits, value = agent(x), None
    return logits, value, None, None


def _choose(logits: Tensor, greedy: bool, g: torch.Generator) -> Tensor:
    if greedy:
        return logits.argmax(-1)
    return torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=g)[:, 0]


@torch.no_grad()
def collect(agent, env, n_episodes: int, seed: int = 0, hooks: Iterable[str] | None = None, greedy: bool = False,
            state_fn: Callable[[gym.Env], dict] | None = None, obs_fn: Callable | None = None,
            max_steps: int = 100_000, progress: bool = True) -> Episodes:
    """Run `n_episodes` episodes of `agent` in `env` (a Gymnasium id, a function building an env, an
    env, or a Stable-Baselines3 VecEnv such as a VecFrameStack), with env seeds seed, seed + 1, ...;
    actions sampled from softmax(logits) with a generator seeded by `seed` (argmax with greedy=True).
    A recurrent agent's hidden state starts at zero each episode and is carried from step to step.
    Activations at `hooks` (default: every hook) are cached in one batched pass at the end."""
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise CourseError(f"n_episodes must be a positive int, got {n_episodes!r}")
    names = check_names(agent, hooks) if hooks is not None else None
    env, opened = _open_env(env)
    try:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise CourseError(f"the harness needs Discrete actions, the env has {env.action_space}")
        run = _run_vec if _is_vec_env(env) else _run_single
        rows, returns = run(agent, env, n_episodes, seed, greedy, state_fn, obs_fn, max_steps, progress)
    finally:
        if opened:
            env.close()
    data = Episodes(obs=torch.stack(rows["obs"]), logits=torch.stack(rows["logits"]),
                    value=None if rows["value"][0] is None else torch.stack(rows["value"]),
                    action=torch.tensor(rows["action"]), reward=torch.tensor(rows["reward"], dtype=torch.float32),
                    episode=torch.tensor(rows["episode"]), step=torch.tensor(rows["step"]), info=rows["info"],
                    returns=torch.tensor(returns, dtype=torch.float32),
                    inputs=torch.stack(rows["inputs"]) if rows["inputs"][0] is not None else None)
    data.acts = activations(agent, data.agent_inputs, names)
    return data


_KEYS = ("obs", "logits", "value", "action", "reward", "episode", "step", "info", "inputs")


def _run_single(agent, env, n_episodes, seed, greedy, state_fn, obs_fn, max_steps, progress):
    g = torch.Generator().manual_seed(seed)
    rows: dict[str, list] = {k: [] for k in _KEYS}
    returns = []
    for ep in tqdm(range(n_episodes), desc="episodes", disable=not progress, leave=False):
        obs, info = env.reset(seed=seed + ep)
        done, t, ret = False, 0, 0.0
        state = agent.initial_state(1) if _recurrent(agent) else None
        while not done:
            x = _obs_tensor(obs, obs_fn)
            logits, value, state, inp = _act(agent, x[None], state, torch.tensor([float(t == 0)]))
            a = int(_choose(logits, greedy, g)[0])
            step_info = dict(info)
            if state_fn is not None:
                step_info.update(state_fn(env))
            obs, r, term, trunc, info = env.step(a)
            for k, v in (("obs", x), ("logits", logits[0]), ("value", None if value is None else value[0]),
                         ("action", a), ("reward", float(r)), ("episode", ep), ("step", t), ("info", step_info),
                         ("inputs", None if inp is None else inp[0])):
                rows[k].append(v)
            ret += float(r)
            t += 1
            done = term or trunc
            if len(rows["obs"]) >= max_steps:
                raise CourseError(f"collect stopped at max_steps={max_steps} steps: collect fewer episodes or raise it")
        returns.append(ret)
    return rows, returns


def _sub_envs(venv) -> list | None:
    inner = getattr(venv, "unwrapped", venv)
    return list(inner.envs) if hasattr(inner, "envs") else None


def _run_vec(agent, venv, n_episodes, seed, greedy, state_fn, obs_fn, max_steps, progress):
    """The VecEnv loop: episode ids are given in the order episodes START (env i starts episode i, the
    next free env the next one), so which episodes are kept does not favour short ones; envs whose
    next episode would be past n_episodes keep stepping, unrecorded, until the others finish."""
    n = venv.num_envs
    subs = _sub_envs(venv)
    if state_fn is not None and subs is None:
        raise CourseError(f"state_fn needs the envs in this process; {type(venv).__name__} runs them elsewhere: use a "
                          "DummyVecEnv (make_vec_env(..., vec_env_cls=DummyVecEnv)) or leave out state_fn")
    g = torch.Generator().manual_seed(seed)
    venv.seed(seed)
    obs = venv.reset()
    reset_infos = list(getattr(venv, "reset_infos", [{}] * n)) or [{}] * n
    prev_info = [dict(i) for i in reset_infos]
    ep_of = [i if i < n_episodes else None for i in range(n)]
    next_ep = min(n, n_episodes)
    t, ret = [0] * n, [0.0] * n
    per_ep: dict[int, dict[str, list]] = {}
    returns = [0.0] * n_episodes
    state = agent.initial_state(n) if _recurrent(agent) else None
    starts = torch.ones(n)
    total, bar = 0, tqdm(total=n_episodes, desc="episodes", disable=not progress, leave=False)
    while any(e is not None for e in ep_of):
        x = _obs_tensor(obs, obs_fn)
        infos_now = [dict(prev_info[i], **(state_fn(subs[i]) if state_fn is not None else {})) for i in range(n)]
        logits, value, state, inp = _act(agent, x, state, starts)
        actions = _choose(logits, greedy, g)
        obs, rewards, dones, infos = venv.step(actions.numpy())
        for i in range(n):
            ep = ep_of[i]
            if ep is not None:
                rec = per_ep.setdefault(ep, {k: [] for k in _KEYS})
                for k, v in (("obs", x[i]), ("logits", logits[i]), ("value", None if value is None else value[i]),
                             ("action", int(actions[i])), ("reward", float(rewards[i])), ("episode", ep),
                             ("step", t[i]), ("info", infos_now[i]), ("inputs", None if inp is None else inp[i])):
                    rec[k].append(v)
                ret[i] += float(rewards[i])
                t[i] += 1
                total += 1
                if total >= max_steps:
                    raise CourseError(f"collect stopped at max_steps={max_steps} steps: collect fewer episodes or raise it")
            skip = ("terminal_observation", "episode", "TimeLimit.truncated")
            prev_info[i] = {k: v for k, v in infos[i].items() if k not in skip}
            if dones[i]:
                if ep is not None:
                    returns[ep] = ret[i]
                    bar.update(1)
                ep_of[i] = next_ep if next_ep < n_episodes else None
                next_ep += ep_of[i] is not None
                t[i], ret[i] = 0, 0.0
                ri = getattr(venv, "reset_infos", None)
                prev_info[i] = dict(ri[i]) if ri else {}
        starts = torch.as_tensor(np.asarray(dones), dtype=torch.float32)
    bar.close()
    rows = {k: [v for ep in range(n_episodes) for v in per_ep[ep][k]] for k in _KEYS}
    return rows, returns


def _takes_value(agent) -> bool:
    try:
        return "return_value" in inspect.signature(agent.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def activations(agent, obs: Tensor, names: Iterable[str] | None = None, chunk: int = 4096) -> dict[str, Tensor]:
    """{hook name: [N, ...]} for observations (or a recurrent agent's step inputs) [N, ...], in chunks."""
    parts = [cache_activations(agent, obs[i:i + chunk], names) for i in range(0, len(obs), chunk)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@torch.no_grad()
def replay_inputs(agent, data: Episodes) -> Tensor:
    """A recurrent agent's step inputs for the observations of `data`, episode by episode, with the
    hidden state that THIS agent computes (e.g. a random-init copy replaying a trained agent's
    episodes). For a feed-forward agent: data.obs."""
    if not _recurrent(agent):
        return data.obs
    out = torch.empty(len(data), agent.packed_width)
    for ep in torch.unique(data.episode):
        idx = torch.nonzero(data.episode == ep).flatten()
        idx = idx[torch.argsort(data.step[idx])]
        state = agent.initial_state(1)
        for j, i in enumerate(idx):
            start = torch.tensor([float(j == 0)])
            out[i] = agent.pack(data.obs[i][None], state, start)[0]
            _, _, state = agent.step(data.obs[i][None], state, start)
    return out


# ------------------------------------------------------------------ the variable of interest
def label(data: Episodes, variable: Callable[[dict, Tensor], object]) -> Tensor:
    """[N] long class labels: `variable(info, obs)` on every step (bools become 0/1). A variable that
    fails or returns something else gives one line naming the step and the info keys available."""
    out = []
    for i, (info, obs) in enumerate(zip(data.info, data.obs)):
        try:
            y = variable(info, obs)
        except Exception as e:
            raise CourseError(f"the variable function failed on step {int(data.step[i])} of episode "
                              f"{int(data.episode[i])} with {type(e).__name__}: {e}; info keys are {sorted(info)}") from None
        if isinstance(y, Tensor) and y.numel() == 1:
            y = y.item()
        if isinstance(y, (bool, np.bool_)):
            y = int(y)
        if not isinstance(y, (int, np.integer)) or y < 0:
            raise CourseError(f"the variable function must return a bool or a class index >= 0, got {y!r} on step "
                              f"{int(data.step[i])} of episode {int(data.episode[i])}")
        out.append(int(y))
    return torch.tensor(out, dtype=torch.long)


# ------------------------------------------------------------------ results
@dataclass
class Finding:
    """A measurement beside its control, each with a 95% interval over `unit`."""

    what: str
    value: tuple[float, float, float]
    control_name: str
    control: tuple[float, float, float]
    unit: str
    difference: tuple[float, float, float] | None = None   # value - control, paired when the design allows
    detail: object = None
    other_controls: dict = field(default_factory=dict)      # {name: (value, low, high)}, reported beside

    def beats(self, name: str) -> bool:
        """The value's interval lies above the interval of the control `name` (an other_control)."""
        return self.value[1] > self.other_controls[name][2]

    @property
    def beats_control(self) -> bool:
        """The interval of value - control lies above 0 (or, unpaired, the intervals separate upwards)."""
        if self.difference is not None:
            return self.difference[1] > 0
        return self.value[1] > self.control[2]

    def __str__(self) -> str:
        s = f"{self.what}: {fmt_ci(*self.value)} vs {self.control_name} {fmt_ci(*self.control)}"
        if self.difference is not None:
            s += f"; difference {fmt_ci(*self.difference)}"
        for name, iv in self.other_controls.items():
            s += f"; {name} {fmt_ci(*iv)}"
        return s + f" (95% intervals over {self.unit})"


def _acts(agent, data: Episodes, hook: str) -> Tensor:
    check_names(agent, [hook])
    if hook not in data.acts:
        data.acts[hook] = activations(agent, data.agent_inputs, [hook])[hook]
    return data.acts[hook].reshape(len(data), -1).float()


def probe_variable(agent, data: Episodes, labels: Tensor, hook: str, seed: int = 0) -> Finding:
    """A linear probe for `labels` on the activations at `hook`, split by episode, beside the
    stronger chance baseline (majority class, shuffled labels) as the control, and the same probe
    on a random-init copy of the agent (`other_controls["random-init agent"]`, drawn by the agent's
    own initialisation; a recurrent copy replays the episodes with its own hidden state): a probe
    that does no better there shows the variable is decodable from the input, not that training
    put it there."""
    acts = _acts(agent, data, hook)
    labels = _check_labels(data, labels)
    random_agent = agent.reinitialised(seed + 1) if hasattr(agent, "reinitialised") else None
    random_acts = None
    if random_agent is not None:
        random_acts = activations(random_agent, replay_inputs(random_agent, data), [hook])[hook]
        random_acts = random_acts.reshape(len(data), -1).float()
    rep: ProbeReport = probe_with_baselines(acts, labels, random_acts, seed=seed, groups=data.episode.numpy())
    base = {"majority class": (rep.probe.majority_acc, *_majority_ci(rep)), "shuffled labels":
            (rep.shuffled.test_acc, *rep.shuffled.test_ci)}
    name = max(base, key=lambda k: base[k][0])
    other = {} if rep.random_model is None else {"random-init agent": (rep.random_model.test_acc, *rep.random_model.test_ci)}
    return Finding(f"probe accuracy at {hook}", (rep.probe.test_acc, *rep.probe.test_ci), name, base[name],
                   f"{rep.probe.n_test_groups} held-out episodes", detail=rep, other_controls=other)


def episode_probe(agent, obs: Tensor, labels: Tensor, episodes: Tensor, hook: str, seed: int = 0) -> float:
    """Held-out accuracy of a linear probe for `labels` [N] on the activations of `agent` at `hook`
    for `obs` [N, ...] (observations or step inputs), trained on half of the EPISODES and tested on
    the other half (`utils.interp.probes.train_probe` with groups=episodes, test_frac=0.5)."""
    with torch.no_grad():
        acts = cache_activations(agent, obs, [hook])[hook]
    return float(train_probe(acts.reshape(len(acts), -1).float(), labels, test_frac=0.5, seed=seed,
                             groups=torch.as_tensor(episodes).numpy()).test_acc)


def _majority_ci(rep: ProbeReport) -> tuple[float, float]:
    n = rep.probe.n_test
    _, lo, hi = wilson_ci(int(round(rep.probe.majority_acc * n)), n)
    return lo, hi


def _check_labels(data: Episodes, labels) -> Tensor:
    labels = torch.as_tensor(labels).long()
    if labels.shape != (len(data),):
        raise CourseError(f"labels must have one entry per step [{len(data)}], got shape {tuple(labels.shape)}")
    return labels


# ------------------------------------------------------------------ counterfactual pairs
def nearest_counterfactual(x: Tensor, labels: Tensor, actions: Tensor, positive: int = 1, chunk: int = 1024,
                           match: Tensor | None = None, max_gap: float = 0.0) -> tuple[Tensor, Tensor]:
    """For each row i with labels[i] == positive (in order): the index j of the nearest row by L1
    distance of x [N, d] with labels[j] != positive AND actions[j] != actions[i] (and, with
    `match` [N], |match[i] - match[j]| <= max_gap: e.g. the same step count), and that distance.
    Returns (index [n_pos] long, distance [n_pos]); index -1 and distance inf where none exists.
    Ties go to the lowest j."""
    pos = torch.nonzero(labels == positive).flatten()
    neg = torch.nonzero(labels != positive).flatten()
    if not len(neg):
        return torch.full((len(pos),), -1, dtype=torch.long), torch.full((len(pos),), float("inf"))
    if match is not None:
        match = torch.as_tensor(match).double()
        if match.shape != (len(x),):
            raise CourseError(f"match must have one value per row [{len(x)}], got shape {tuple(match.shape)}")
    best_d, best_j = [], []
    for i in range(0, len(pos), chunk):
        p = pos[i:i + chunk]
        d = torch.cdist(x[p].double(), x[neg].double(), p=1)
        d[actions[p][:, None] == actions[neg][None, :]] = float("inf")
        if match is not None:
            d[(match[p][:, None] - match[neg][None, :]).abs() > max_gap] = float("inf")
        v, j = d.min(1)
        best_d.append(v)
        best_j.append(torch.where(torch.isfinite(v), neg[j], torch.full_like(j, -1)))
    return torch.cat(best_j), torch.cat(best_d).float()


@torch.no_grad()
def counterfactual_pairs(data: Episodes, labels: Tensor, n_pairs: int | None = None, positive: int = 1,
                         seed: int = 0, chunk: int = 1024, match: Tensor | None = None,
                         max_gap: float = 0.0) -> dict[str, Tensor]:
    """Pairs of observations that differ in the variable and change the agent's greedy action:
    for each observation with labels == `positive` (clean), the nearest observation (L1 distance
    of the flattened observations) with another label whose greedy action differs (corrupt), and,
    with `match` [N] (e.g. data.step), whose match value is within `max_gap` of the clean one's:
    pairs matched on a correlated nuisance, so that it does not differ between clean and corrupt.
    Each clean observation is used once; the `n_pairs` closest pairs are kept (all if None), ties
    broken at random (seeded), so a cap does not favour the first episodes collected.

    Returns {"clean", "corrupt": [n, ...] (what the agent is given: observations, or a recurrent
    agent's step inputs), "a_clean", "a_corrupt", "distance", "clean_idx", "corrupt_idx",
    "corrupt_episode": [n]}."""
    labels = _check_labels(data, labels)
    pos = torch.nonzero(labels == positive).flatten()
    if not len(pos) or len(pos) == len(labels):
        raise CourseError(f"the variable takes only one value on the collected steps ({len(pos)} of {len(labels)} with "
                          f"label {positive}): collect more or different episodes")
    corrupt, dist = nearest_counterfactual(data.obs.reshape(len(data), -1).float(), labels, data.greedy, positive,
                                           chunk, match=match, max_gap=max_gap)
    ok = corrupt >= 0
    if not ok.any():
        raise CourseError("no two observations differ in the variable AND in the greedy action"
                          + (" within the match gap" if match is not None else "")
                          + ": the variable may not matter to this agent, or collect more episodes")
    greedy = data.greedy
    clean, corrupt, dist = pos[ok], corrupt[ok], dist[ok]
    shuffle = torch.randperm(len(dist), generator=torch.Generator().manual_seed(seed))
    order = shuffle[torch.argsort(dist[shuffle], stable=True)][:n_pairs]
    clean, corrupt, dist = clean[order], corrupt[order], dist[order]
    inputs = data.agent_inputs
    return {"clean": inputs[clean], "corrupt": inputs[corrupt], "a_clean": greedy[clean],
            "a_corrupt": greedy[corrupt], "distance": dist, "clean_idx": clean, "corrupt_idx": corrupt,
            "corrupt_episode": data.episode[corrupt]}


# ------------------------------------------------------------------ patching
_PAIR_KEYS = ("clean", "corrupt", "a_clean", "a_corrupt")


@torch.no_grad()
def patch_pairs(agent, pairs: dict[str, Tensor], hook: str, k: int = 8, seed: int = 0) -> Finding:
    """Held-out unit patching at `hook` (`utils.interp.patching.heldout_unit_patching`): the top-k
    units by single-unit patching on discovery pairs, measured on test pairs, vs k random units.
    Value and control are fractions of the per-pair logit difference logit[a_clean] - logit[a_corrupt]
    recovered, with bootstrap intervals over test pairs."""
    check_names(agent, [hook])
    missing = [key for key in _PAIR_KEYS if key not in pairs]
    if missing:
        raise CourseError(f"pairs lack {missing}: build them with counterfactual_pairs")
    n = len(pairs["clean"])
    if n < 8:
        raise CourseError(f"patching needs at least 8 counterfactual pairs (4 discovery, 4 test), got {n}")
    d = cache_activations(agent, pairs["clean"][:1], [hook])[hook].shape[-1]
    if not 1 <= k <= d:
        raise CourseError(f"k must lie in [1, {d}] (the units of {hook}), got {k}")
    res = heldout_unit_patching(agent, {key: pairs[key] for key in _PAIR_KEYS}, hook, k=k, seed=seed)
    return Finding(f"fraction of the logit difference recovered by the top {k} units of {hook}", res["top_ci"],
                   f"{k} random units", res["random_ci"], f"{n - n // 2} held-out pairs", detail=res)


@torch.no_grad()
def heldout_patching(agent, pairs: dict[str, Tensor], hook: str, k: int, seed: int = 0, *,
                     ratio_of_means: bool = True, descending: bool = True,
                     random_seed: int | None = None) -> tuple[float, float]:
    """(top-k fraction recovered, k random units' fraction recovered) on held-out pairs, written out:
    split the pairs in half (`split_pairs(pairs, seed)`: discovery, test); score each unit of `hook`
    by patching it alone from clean into corrupt on the discovery pairs; patch the k best together
    on the test pairs, and k random units (`randperm(n_units, seed + 1)[:k]`). The fraction is
    (mean patched - mean corrupt) / (mean clean - mean corrupt) of the per-pair logit difference
    logit[a_clean] - logit[a_corrupt]: `patch_pairs`'s numbers without their intervals. The keyword
    switches exist to show what goes wrong otherwise (exercise 9's wrong answers)."""
    from utils.interp.patching import patch_each_unit, run_patched, split_pairs

    disc, test = split_pairs({key: pairs[key] for key in _PAIR_KEYS}, seed)
    ld = lambda p: lambda logits: logit_diff(logits, p["a_clean"], p["a_corrupt"])  # noqa: E731
    single = patch_each_unit(agent, disc["clean"], disc["corrupt"], hook, lambda lg: ld(disc)(lg).mean())
    top = torch.argsort(single, descending=descending)[:k]
    rand = torch.randperm(len(single), generator=torch.Generator().manual_seed(
        seed + 1 if random_seed is None else random_seed))[:k]
    act = cache_activations(agent, test["clean"], [hook])[hook]
    metric = ld(test)
    clean, corrupt = metric(agent(test["clean"])).double(), metric(agent(test["corrupt"])).double()
    out = []
    for units in (top, rand):
        patched = metric(run_patched(agent, test["corrupt"], hook, act, units.tolist())).double()
        if ratio_of_means:
            out.append(float((patched.mean() - corrupt.mean()) / (clean.mean() - corrupt.mean())))
        else:
            out.append(float(((patched - corrupt) / (clean - corrupt)).mean()))
    return out[0], out[1]


# ------------------------------------------------------------------ steering
def split_episodes(data: Episodes, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(discovery, test) boolean masks over steps: a random half of the EPISODES each."""
    eps = torch.unique(data.episode)
    if len(eps) < 4:
        raise CourseError(f"need at least 4 episodes to split into discovery and test halves, got {len(eps)}")
    perm = eps[torch.randperm(len(eps), generator=torch.Generator().manual_seed(seed))]
    disc = torch.isin(data.episode, perm[: len(eps) // 2])
    return disc, ~disc


@torch.no_grad()
def steering_hits(agent, hook: str, obs: Tensor, target: Tensor, direction: Tensor, scale: float) -> Tensor:
    """[n] float 0/1: whether the greedy action on obs [n, ...] equals target [n] when
    scale * direction (the activation's shape without the batch axis) is added at `hook`. The
    hook is removed afterwards; obs is not modified."""
    def hook_fn(act, hook):
        return act + scale * direction.to(act.device, act.dtype)

    logits = agent.run_with_hooks(obs, fwd_hooks=[(hook, hook_fn)])
    return (logits.argmax(-1) == target).double()


def _gap_closed(ld_steered, ld_clean, ld_corrupt):
    """(mean steered - mean corrupt) / (mean clean - mean corrupt) over the last axis."""
    return (ld_steered.mean(-1) - ld_corrupt.mean(-1)) / (ld_clean.mean(-1) - ld_corrupt.mean(-1))


@torch.no_grad()
def steer_variable(agent, data: Episodes, labels: Tensor, pairs: dict[str, Tensor], hook: str,
                   scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0), positive: int = 1, n_random: int = 8,
                   source: str = "labels", seed: int = 0) -> Finding:
    """Steering along the variable: add scale * direction at `hook` on the corrupt observation of
    counterfactual pairs, and measure the fraction of the logit gap logit[a_clean] - logit[a_corrupt]
    between the corrupt and the clean observation that it closes (1 = the steered corrupt run
    prefers the clean action as much as the clean run does, 0 = no change).

    The direction is learnt on discovery episodes (a random half): with source="labels" (default)
    the mean activation with labels == positive minus the mean with other labels over their steps;
    with source="pairs" the mean activation difference clean - corrupt over the pairs whose corrupt
    observation lies in them (matched pairs, but only as varied as those pairs are).

    Control: `n_random` random directions of the same norm (`norm_matched_random`), averaged per
    pair. The scale is chosen on the pairs whose corrupt observation lies in a discovery episode;
    the finding is measured on the others (test episodes), with bootstrap intervals over those pairs
    (the difference is paired). `detail["per_scale"]` has every scale on the test pairs, with the
    rate at which the greedy action becomes the clean one (`steering_hits`) beside the gap closed."""
    labels = _check_labels(data, labels)
    scales = [float(s) for s in scales]
    if not scales:
        raise CourseError("give at least one steering scale")
    if n_random < 1:
        raise CourseError(f"n_random must be at least 1, got {n_random}")
    if source not in ("pairs", "labels"):
        raise CourseError(f"source must be 'pairs' or 'labels', got {source!r}")
    acts = _acts(agent, data, hook)
    shape = tuple(data.acts[hook].shape[1:])
    disc, _ = split_episodes(data, seed)
    in_disc = torch.isin(pairs["corrupt_episode"], torch.unique(data.episode[disc]))
    if int((~in_disc).sum()) < 4:
        raise CourseError(f"only {int((~in_disc).sum())} counterfactual pairs have their corrupt observation in a test "
                          "episode (4 needed): collect more episodes")
    if source == "pairs":
        if int(in_disc.sum()) < 1:
            raise CourseError("no counterfactual pair lies in a discovery episode: collect more episodes")
        direction = (acts[pairs["clean_idx"][in_disc]] - acts[pairs["corrupt_idx"][in_disc]]).mean(0)
    else:
        direction = mean_difference(acts, disc & (labels == positive), disc & (labels != positive))
    randoms = [norm_matched_random(direction, seed + 7 + r) for r in range(n_random)]

    def ld(logits: Tensor, mask: Tensor) -> np.ndarray:
        return logit_diff(logits, pairs["a_clean"][mask], pairs["a_corrupt"][mask]).double().numpy()

    def steered(mask: Tensor, d: Tensor, s: float) -> Tensor:
        return agent.run_with_hooks(pairs["corrupt"][mask], fwd_hooks=[(hook, _add(d.reshape(shape), s))])

    def measure(mask: Tensor, s: float) -> dict:
        clean, corrupt = ld(agent(pairs["clean"][mask]), mask), ld(agent(pairs["corrupt"][mask]), mask)
        d_logits = steered(mask, direction, s)
        r_logits = [steered(mask, r, s) for r in randoms]
        target = pairs["a_clean"][mask]
        return {"ld": (ld(d_logits, mask), np.mean([ld(r, mask) for r in r_logits], 0), clean, corrupt),
                "hits": ((d_logits.argmax(-1) == target).double().numpy(),
                         np.mean([(r.argmax(-1) == target).double().numpy() for r in r_logits], 0))}

    if int(in_disc.sum()) >= 4:
        def disc_gap(s: float) -> float:
            ds, rs, c, x = measure(in_disc, s)["ld"]
            return float(_gap_closed(ds, c, x) - _gap_closed(rs, c, x))
        best = max(scales, key=disc_gap)
    else:
        best = max(scales)
    test = ~in_disc
    n = int(test.sum())
    per_scale, cols = {}, None
    for s in scales:
        m = measure(test, s)
        ds, rs, c, x = m["ld"]
        per_scale[s] = {"gap_direction": float(_gap_closed(ds, c, x)), "gap_random": float(_gap_closed(rs, c, x)),
                        "hits_direction": float(m["hits"][0].mean()), "hits_random": float(m["hits"][1].mean())}
        if s == best:
            cols = (ds, rs, c, x)
    ds, rs, c, x = cols
    if abs(float(c.mean() - x.mean())) < 1e-8:
        raise CourseError("clean and corrupt observations give the same logit gap: the pairs do not change the action")
    kw = dict(n_boot=1000, seed=seed)
    value = bootstrap_statistic(lambda a, b, cc, xx: _gap_closed(a, cc, xx), ds, rs, c, x, **kw)
    control = bootstrap_statistic(lambda a, b, cc, xx: _gap_closed(b, cc, xx), ds, rs, c, x, **kw)
    diff = bootstrap_statistic(lambda a, b, cc, xx: _gap_closed(a, cc, xx) - _gap_closed(b, cc, xx), ds, rs, c, x, **kw)
    return Finding(f"steering at {hook} (scale {best:g}, chosen on discovery pairs): fraction of the clean-vs-corrupt "
                   "logit gap closed", value, f"{n_random} norm-matched random directions", control,
                   f"{n} held-out pairs", difference=diff,
                   detail={"per_scale": per_scale, "direction": direction, "scale": best, "test_pairs": test})


def _add(direction: Tensor, scale: float):
    return lambda act, hook: act + scale * direction.to(act.device, act.dtype)


# ------------------------------------------------------------------ specific controls for a steering claim
ISOTROPIC = "isotropic random (a floor)"


@torch.no_grad()
def variance_matched_gap(agent, data: Episodes, pairs: dict[str, Tensor], hook: str, finding: Finding,
                         n_draws: int = 4, seed: int = 0) -> float:
    """The fraction of the logit gap closed on the finding's held-out pairs, at its scale, along
    random directions drawn from the activations' own covariance at `hook`
    (`utils.interp.controls.variance_matched_random`), rescaled to the finding's direction norm;
    the mean over `n_draws` draws."""
    acts = _acts(agent, data, hook)
    shape = tuple(data.acts[hook].shape[1:])
    direction, scale, test = (finding.detail[k] for k in ("direction", "scale", "test_pairs"))
    a, b = pairs["a_clean"][test], pairs["a_corrupt"][test]
    c = logit_diff(agent(pairs["clean"][test]), a, b).double().numpy()
    x = logit_diff(agent(pairs["corrupt"][test]), a, b).double().numpy()
    gaps = []
    for r in range(n_draws):
        v = variance_matched_random(acts, 1, seed=1000 * seed + r)[:, 0] * direction.norm()
        out = agent.run_with_hooks(pairs["corrupt"][test], fwd_hooks=[(hook, _add(v.reshape(shape), scale))])
        gaps.append(float(_gap_closed(logit_diff(out, a, b).double().numpy(), c, x)))
    return float(np.mean(gaps))


@torch.no_grad()
def steering_controls(agent, data: Episodes, labels: Tensor, pairs: dict[str, Tensor], hook: str,
                      finding: Finding, nuisance: Mapping[str, Tensor] | None = None,
                      scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0), n_draws: int = 16, seed: int = 0) -> dict:
    """The specific controls of a steering claim (`finding`, from `steer_variable` on the same
    pairs), each the fraction of the clean-vs-corrupt logit gap closed on the same held-out pairs:

    - "nuisance: <name>": the same method (mean difference on discovery episodes, scale chosen on
      discovery pairs) for each correlated variable in `nuisance` ({name: labels [N]}, e.g. door
      open, step count above its median);
    - "shuffled labels": the same method on the variable's labels shuffled;
    - "variance-matched random": `variance_matched_gap` at the finding's norm and scale, the mean
      over `n_draws` directions (one draw at the claim's norm and scale can swing either way);
    - "isotropic random (a floor)": the finding's own norm-matched random control.

    A nuisance that takes one value on these steps is left out (it cannot be steered along).
    Returns {name: value}; `utils.interp.controls.specificity_verdict` decides over seeds."""
    labels = _check_labels(data, labels)
    out = {}
    for name, y in (nuisance or {}).items():
        y = _check_labels(data, y)
        if len(torch.unique(y)) < 2:
            continue
        out[f"nuisance: {name}"] = steer_variable(agent, data, y, pairs, hook, scales=scales, seed=seed).value[0]
    out[SHUFFLED] = steer_variable(agent, data, shuffled_labels(labels, seed), pairs, hook, scales=scales,
                                   seed=seed).value[0]
    out[VARIANCE_MATCHED] = variance_matched_gap(agent, data, pairs, hook, finding, n_draws=n_draws, seed=seed)
    out[ISOTROPIC] = finding.control[0]
    return out
