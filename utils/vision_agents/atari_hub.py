"""Released Atari agents (problem 8.17): CleanRL's DQN and RL Zoo's PPO on Breakout, from the hub.

- `cleanrl/BreakoutNoFrameskip-v4-dqn_atari-seed1` (file `dqn_atari.cleanrl_model`): a plain torch
  state dict of CleanRL's `QNetwork.network` (Conv 4->32 k8 s4, ReLU, Conv 32->64 k4 s2, ReLU,
  Conv 64->64 k3 s1, ReLU, Flatten, Linear 3136->512, ReLU, Linear 512->A; keys
  `network.{0,2,4,7,9}`), loaded into the course-owned `QNetwork` below.
- `sb3/ppo-BreakoutNoFrameskip-v4` (RL Baselines3 Zoo): a Stable-Baselines3 zip (PPO, CnnPolicy),
  loaded with `huggingface_sb3` as chapter 12's `utils.adventure.hub` does.

Both go through chapter 12's adapter (`utils.interp.adapters.adapt`), so caching, patching,
probes and saliency work on them unchanged. Both take uint8 frames [B, 4, 84, 84] (values 0-255)
and divide by 255 themselves.

    agent = load_atari_agent("dqn")        # or "ppo"; the gpu profile, or cpu with USE_HUB = True
    env = make_breakout()                  # the agents' own wrappers (see `make_breakout`)
    returns = evaluate_atari(agent, n_episodes=10, epsilon=0.05)

The loader fails offline in one line naming the offline fixture: `write_atari_fixtures(hub_cache)`
writes both repositories with RANDOM weights at full shape in the hub's cache layout
(`utils.lm.fixtures`), with a README whose model-card metadata carries FIXTURE_MARKER (read by
`AtariAgent.is_fixture`) and no mean return. `model_card_return` reads the card's `mean_reward`
(model-index metadata) so that the run compares its own evaluation with the published one.
Licences: CleanRL's models: MIT (the card says so); the RL Zoo model: none stated on its card.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from utils.core import CourseError

DQN_REPO = "cleanrl/BreakoutNoFrameskip-v4-dqn_atari-seed1"
DQN_FILE = "dqn_atari.cleanrl_model"
PPO_REPO = "sb3/ppo-BreakoutNoFrameskip-v4"
PPO_FILE = "ppo-BreakoutNoFrameskip-v4.zip"
CARD = "README.md"
ENV_ID = "BreakoutNoFrameskip-v4"
REPOS = {"dqn": DQN_REPO, "ppo": PPO_REPO}
N_ACTIONS = 4
# Breakout's RAM (AtariARI's annotation, Anand et al. 2019): the probes' labels
RAM = {"ball_x": 99, "ball_y": 101, "paddle_x": 72}
OFFLINE_HINT = ("write the offline fixtures with `python -m utils.lm fixtures` (they include "
                "utils.vision_agents.atari_hub.write_atari_fixtures) and point HF_HOME at them, or run "
                "the chapter without the hub (USE_HUB = False)")


class QNetwork(nn.Module):
    """CleanRL's Atari Q-network (dqn_atari.py), the same module names, so its state dict loads as is."""

    def __init__(self, n_actions: int = N_ACTIONS):
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
            nn.Linear(512, n_actions))

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x.float() / 255.0)


def _check_state_dict(state: dict, name: str) -> int:
    want = {f"network.{i}.{p}" for i in (0, 2, 4, 7, 9) for p in ("weight", "bias")}
    if not isinstance(state, dict) or set(state) != want:
        got = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise CourseError(f"{name}: expected CleanRL's QNetwork state dict (keys network.{{0,2,4,7,9}}), got {got}")
    return int(state["network.9.weight"].shape[0])


@dataclass
class AtariAgent:
    """A released Breakout agent: `net` (its own module), `agent` (the adapted one: hooks, random-init
    control), its model card's mean return (None when the card states none)."""

    kind: str                 # "dqn" or "ppo"
    repo_id: str
    net: nn.Module
    agent: object             # utils.interp.adapters.AdaptedPolicy
    card_return: tuple[float, float] | None
    fixture: bool

    @property
    def is_fixture(self) -> bool:
        return self.fixture


def model_card_return(text: str) -> tuple[float, float] | None:
    """(mean, std) of the `mean_reward` in a model card's model-index metadata, or None."""
    m = re.search(r"type:\s*mean_reward\s*\n\s*value:\s*([-+]?[\d.]+)\s*\+/-\s*([\d.]+)", text)
    return (float(m.group(1)), float(m.group(2))) if m else None


def _card(repo_id: str) -> tuple[tuple[float, float] | None, bool]:
    from utils.adventure.hub import _download
    from utils.lm.fixtures import FIXTURE_MARKER

    path = _download(repo_id, CARD, required=False, hint=OFFLINE_HINT)
    text = Path(path).read_text() if path else ""
    return model_card_return(text), FIXTURE_MARKER in text


def load_atari_agent(kind: str = "dqn", device: str = "cpu") -> AtariAgent:
    """CleanRL's DQN ("dqn") or RL Zoo's PPO ("ppo") on Breakout from the Hugging Face hub (the local
    cache first), adapted (`utils.interp.adapters.adapt`). Offline without the files: one line
    naming the offline fixture. Only load repositories you trust (an SB3 zip holds pickles)."""
    from utils.adventure.hub import _download, _trusted
    from utils.interp.adapters import adapt
    from utils.lm.fixtures import FIXTURE_MARKER

    if kind not in REPOS:
        raise CourseError(f"kind must be one of {sorted(REPOS)}, got {kind!r}")
    repo = REPOS[kind]
    card, marked = _card(repo)
    example = torch.zeros(1, 4, 84, 84)
    if kind == "dqn":
        path = _download(repo, DQN_FILE, hint=OFFLINE_HINT)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = QNetwork(_check_state_dict(state, DQN_FILE))
        net.load_state_dict(state)
        net = net.to(device).eval()
        agent = adapt(net, example_obs=example.to(device), init=lambda m: _cleanrl_init(m))
        return AtariAgent(kind, repo, net, agent, card, marked)
    from gymnasium import spaces
    from stable_baselines3 import PPO

    path = _download(repo, PPO_FILE, hint=OFFLINE_HINT)
    custom = {"observation_space": spaces.Box(0, 255, (4, 84, 84), np.uint8),
              "action_space": spaces.Discrete(N_ACTIONS), "learning_rate": 0.0,
              "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    try:
        with _trusted():
            model = PPO.load(path, device=device, custom_objects=custom)
    except Exception as e:
        raise CourseError(f"{repo}: Stable-Baselines3 could not load {Path(path).name} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    model.policy.eval()
    agent = adapt(model.policy, example_obs=example.to(device))
    return AtariAgent(kind, repo, model.policy, agent, card, marked or bool(getattr(model, FIXTURE_MARKER, False)))


def _cleanrl_init(module: nn.Module) -> None:
    """PyTorch's default initialisation (CleanRL's dqn_atari.py uses the defaults) for the random-init control."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()


# ------------------------------------------------------------------ the environment
def make_breakout(seed: int = 0, episodic_life: bool = True):
    """BreakoutNoFrameskip-v4 through ale-py with the wrappers both agents were trained with (SB3's
    AtariWrapper, which CleanRL's dqn_atari.py copies): 30 random no-ops at reset, frame skip 4 with
    a max over the last two frames, a life loss ends the agent's episode (`episodic_life`; the game
    goes on, see `evaluate_atari`), FIRE at reset, grey 84x84, and a stack of the last 4 frames.
    Returns uint8 observations [4, 84, 84]. The max over two frames is taken on the colour screen, then
    `grey` applies OpenCV's RGB-to-grey weights in its fixed-point form, and the resize is PIL's box
    filter (the area average OpenCV's INTER_AREA computes; OpenCV is not a course dependency)."""
    import gymnasium as gym
    from gymnasium import spaces
    from PIL import Image
    from stable_baselines3.common.atari_wrappers import (EpisodicLifeEnv, FireResetEnv, MaxAndSkipEnv,
                                                         NoopResetEnv)

    try:
        import ale_py
        gym.register_envs(ale_py)
    except ImportError:
        raise CourseError("ale-py is not installed: pip install ale-py==0.12.1 (it ships the Atari ROMs)") from None

    class Warp(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = spaces.Box(0, 255, (84, 84), np.uint8)

        def observation(self, obs):
            return np.asarray(Image.fromarray(grey(obs)).resize((84, 84), Image.Resampling.BOX), np.uint8)

    env = gym.make(ENV_ID, obs_type="rgb")
    env = NoopResetEnv(env, noop_max=30)
    env = MaxAndSkipEnv(env, skip=4)
    if episodic_life:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    env = gym.wrappers.FrameStackObservation(Warp(env), 4)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def grey(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's COLOR_RGB2GRAY in its integer form: (4899 R + 9617 G + 1868 B + 8192) >> 14, uint8."""
    x = np.asarray(rgb, np.int32)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise CourseError(f"grey needs an RGB screen [H, W, 3], got shape {x.shape}")
    return ((x[..., 0] * 4899 + x[..., 1] * 9617 + x[..., 2] * 1868 + 8192) >> 14).astype(np.uint8)


def ram_variables(env) -> dict[str, int]:
    """Breakout's ball and paddle positions read from the emulator's RAM (`RAM`)."""
    ram = env.unwrapped.ale.getRAM()
    return {k: int(ram[i]) for k, i in RAM.items()}


@torch.no_grad()
def act(agent, obs: np.ndarray, rng: np.random.Generator, epsilon: float = 0.0, sample: bool = False,
        device: str = "cpu") -> int:
    """One action: sampled from softmax(logits) (`sample`), else greedy, with probability `epsilon`
    replaced by a uniform random one."""
    if epsilon > 0 and rng.random() < epsilon:
        return int(rng.integers(N_ACTIONS))
    logits = agent(torch.as_tensor(np.asarray(obs)[None], dtype=torch.float32, device=device))[0].float().cpu()
    if sample:
        p = torch.softmax(logits, -1).numpy().astype(np.float64)
        return int(rng.choice(len(p), p=p / p.sum()))
    return int(logits.argmax())


def play(agent, n_episodes: int, seed: int = 0, epsilon: float = 0.0, sample: bool = False,
         max_steps: int = 27_000, record: int = 0, device: str = "cpu") -> dict:
    """Full games (all five lives: a life loss ends the agent's episode, not the game) of `agent`.
    Returns {"returns" [n] (unclipped game score), "steps", and, when `record` > 0, the first `record`
    visited frames "obs" uint8 [m, 4, 84, 84] with their RAM variables "vars" and "episode" ids: blocks of
    record // 8 consecutive steps, the unit of grouped splits}.
    `max_steps` agent steps cut a game that stalls (108k frames, as the Atari benchmarks do)."""
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes <= 0:
        raise CourseError(f"n_episodes must be a positive int, got {n_episodes!r}")
    env = make_breakout(seed)
    rng = np.random.default_rng(seed)
    returns, steps = [], 0
    rec = {"obs": [], "vars": [], "episode": []}
    block = max(1, record // 8)     # eight or more blocks of consecutive steps (grouped splits)
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, t = 0.0, 0
        while t < max_steps:
            if len(rec["obs"]) < record:
                rec["obs"].append(np.asarray(obs, np.uint8))
                rec["vars"].append(ram_variables(env))
                rec["episode"].append(ep * 1_000_000 + t // block)   # blocks of steps: the split's unit
            obs, r, term, trunc, _ = env.step(act(agent, obs, rng, epsilon, sample, device))
            total += float(r)
            t += 1
            if term or trunc:
                if env.unwrapped.ale.game_over() or trunc:
                    break
                obs, _ = env.reset()       # EpisodicLifeEnv: the game goes on with the next life
        returns.append(total)
        steps += t
    env.close()
    out = {"returns": np.asarray(returns), "steps": steps}
    if record:
        out.update(obs=torch.as_tensor(np.stack(rec["obs"])),
                   vars={k: np.array([v[k] for v in rec["vars"]]) for k in RAM},
                   episode=np.asarray(rec["episode"]))
    return out


# ------------------------------------------------------------------ saliency at Atari scale
@torch.no_grad()
def blur_saliency_atari(agent, obs: Tensor, stride: int = 5, sigma_mask: float = 5.0, sigma_blur: float = 3.0,
                        chunk: int = 256) -> Tensor:
    """Greydanus et al.'s perturbation saliency on [B, 4, 84, 84] frames, as in their paper: a Gaussian
    mask (std 5 pixels) every `stride` pixels, blending in a blurred frame (std 3), scored
    0.5 ||logits - logits'||^2; upsampled back to [B, 84, 84]."""
    from utils.vision_agents.interp import gaussian_blur

    x = torch.as_tensor(obs).float()
    B, C, H, W = x.shape
    ys, xs = torch.arange(0, H, stride).float(), torch.arange(0, W, stride).float()
    ii, jj = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    centres = [(y, z) for y in ys for z in xs]
    blurred = gaussian_blur(x, sigma_blur)
    base = agent(x)
    out = torch.zeros(B, len(centres))
    for b in range(B):
        for s in range(0, len(centres), chunk):
            cs = centres[s:s + chunk]
            m = torch.stack([torch.exp(-((ii - y) ** 2 + (jj - z) ** 2) / (2 * sigma_mask ** 2)) for y, z in cs])[:, None]
            xp = x[b:b + 1] * (1 - m) + blurred[b:b + 1] * m
            out[b, s:s + len(cs)] = 0.5 * ((agent(xp) - base[b:b + 1]) ** 2).sum(-1).cpu()
    coarse = out.view(B, 1, len(ys), len(xs))
    return torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)[:, 0]


def gradient_x_input_atari(agent, obs: Tensor) -> Tensor:
    """|gradient x input| of the greedy action's centred logit, summed over the 4 frames: [B, 84, 84]."""
    from utils.vision_agents.interp import centred_logit

    x = torch.as_tensor(obs).float().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = agent(x)
        centred_logit(logits, logits.argmax(-1)).sum().backward()
    return (x.grad * x).abs().sum(1).detach()


@torch.no_grad()
def region_effects_atari(agent, obs: Tensor, maps: dict[str, Tensor], size: int = 12, seed: int = 0,
                         sigma_blur: float = 3.0) -> dict[str, Tensor]:
    """Blur the size x size square a map ranks highest (its summed saliency) and measure the total
    variation of the action distribution, beside a square of equal area at a random place."""
    from utils.vision_agents.interp import gaussian_blur, total_variation

    x = torch.as_tensor(obs).float()
    B, C, H, W = x.shape
    base = agent(x)
    blurred = gaussian_blur(x, sigma_blur)
    g = torch.Generator().manual_seed(seed)

    def effect(y0, x0):
        m = torch.zeros(B, 1, H, W)
        for b in range(B):
            m[b, :, y0[b]:y0[b] + size, x0[b]:x0[b] + size] = 1
        return total_variation(base, agent(x * (1 - m) + blurred * m)).cpu()

    out = {}
    for name, s in maps.items():
        pooled = torch.nn.functional.avg_pool2d(s[:, None].float(), size, stride=1)[:, 0]   # [B, H-size+1, ...]
        flat = pooled.flatten(1).argmax(1)
        out[name] = effect(flat // pooled.shape[2], flat % pooled.shape[2])
    out["random square"] = effect(torch.randint(0, H - size + 1, (B,), generator=g),
                                  torch.randint(0, W - size + 1, (B,), generator=g))
    return out


# ------------------------------------------------------------------ the offline fixtures
def _card_text(repo_id: str) -> str:
    from utils.lm.fixtures import FIXTURE_MARKER, MARKER_TEXT
    return (f"---\n{FIXTURE_MARKER}: {MARKER_TEXT}\ntags:\n- {ENV_ID}\n---\n# {repo_id} (offline fixture)\n"
            "Random weights at full shape; the card states no mean return.\n")


def write_atari_fixtures(hub_cache, seed: int = 0) -> dict:
    """Write random-weight stand-ins of both repositories into a Hugging Face cache (`<HF_HOME>/hub`),
    at full shape: CleanRL's state dict (QNetwork, 1.69M parameters) and an SB3 zip (PPO CnnPolicy
    on [4, 84, 84] uint8, 4 actions), each with a README carrying FIXTURE_MARKER."""
    import warnings

    import gymnasium as gym
    from gymnasium import spaces
    from stable_baselines3 import PPO

    from utils.lm.fixtures import FIXTURE_MARKER, MARKER_TEXT, _put, repo_snapshot

    class Frames(gym.Env):
        observation_space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
        action_space = spaces.Discrete(N_ACTIONS)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    files = {}
    with tempfile.TemporaryDirectory() as d, torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        snap = repo_snapshot(Path(hub_cache), DQN_REPO)
        p = Path(d) / DQN_FILE
        torch.save(QNetwork().state_dict(), p)
        _put(snap, DQN_FILE, p)
        files[DQN_REPO] = [DQN_FILE, CARD]
        snap2 = repo_snapshot(Path(hub_cache), PPO_REPO)
        model = PPO("CnnPolicy", Frames(), n_steps=16, batch_size=16, seed=seed, device="cpu")
        setattr(model, FIXTURE_MARKER, MARKER_TEXT)
        z = Path(d) / PPO_FILE
        model.save(z)
        _put(snap2, PPO_FILE, z)
        files[PPO_REPO] = [PPO_FILE, CARD]
        for repo, s in ((DQN_REPO, snap), (PPO_REPO, snap2)):
            c = Path(d) / f"card-{repo.split('/')[0]}.md"
            c.write_text(_card_text(repo))
            _put(s, CARD, c)
    return {"repo": f"{DQN_REPO}, {PPO_REPO}", "files": files,
            "shape": "QNetwork 4x84x84 -> 3136 -> 512 -> 4; PPO CnnPolicy 4x84x84 -> 3136 -> 512 -> 4"}


# ------------------------------------------------------------------ the chapter's analysis of one agent
DENSE = {"dqn": "network.8.hook_out", "ppo": "features_extractor.linear.1.hook_out"}


@torch.no_grad()
def greedy_actions(agent, obs: Tensor, batch: int = 256) -> Tensor:
    return torch.cat([agent(obs[i:i + batch].float()).argmax(-1) for i in range(0, len(obs), batch)])


def interpret_atari(hub: AtariAgent, rec: dict, seed: int = 0, n_saliency: int = 16, n_boot: int = 1000) -> dict:
    """Saliency checked by intervention, probes with controls and subspace patching with specificity
    controls, on one released agent's recorded frames (`play(..., record=n)`). Intervals are over
    frames or frame pairs of this one agent (bootstrap): {"saliency", "probes", "patching"}."""
    from utils.interp.controls import specificity_controls
    from utils.interp.probes import probe_with_controls
    from utils.stats import bootstrap_ci, discovery_test_split
    from utils.vision_agents.interp import class_mean_subspace, subspace_patching, terciles

    agent, layer = hub.agent, DENSE[hub.kind]
    obs = rec["obs"].float()
    out: dict = {"layer": layer}
    # 1. saliency, checked by blurring the square it ranks highest (beside a random square of equal area)
    s_obs = obs[:n_saliency]
    maps = {"blur saliency": blur_saliency_atari(agent, s_obs), "gradient x input": gradient_x_input_atari(agent, s_obs)}
    rnd = agent.reinitialised(10_000 + seed)   # not the seed a fixture was written with
    maps["random-init blur saliency"] = blur_saliency_atari(rnd, s_obs)
    tv = region_effects_atari(agent, s_obs, maps, seed=seed)
    out["saliency"] = {k: bootstrap_ci(v.numpy(), n_boot, seed=seed) for k, v in tv.items()}
    out["saliency_diff"] = {m: {c: bootstrap_ci((tv[m] - tv[c]).numpy(), n_boot, seed=seed)
                                for c in ("random square", "random-init blur saliency") if c != m}
                            for m in ("blur saliency", "gradient x input")}
    # 2. probes at the dense layer: ball and paddle column (terciles), split by blocks of 100 steps
    acts = cache_activations_batched(agent, obs, layer)
    racts = cache_activations_batched(rnd, obs, layer)
    labels = {v: terciles(rec["vars"][v], seed) for v in ("ball_x", "paddle_x")}
    out["probes"] = {v: probe_with_controls(acts, torch.as_tensor(y), racts, groups=rec["episode"], seed=seed)
                     for v, y in labels.items()}
    # 3. patching the ball-column subspace between frames whose greedy actions differ
    disc, test = discovery_test_split(len(obs), seed, groups=rec["episode"])
    spec = specificity_controls(class_mean_subspace, acts[disc], torch.as_tensor(labels["ball_x"][disc]), seed=seed,
                                nuisance={"paddle x": torch.as_tensor(labels["paddle_x"][disc])})
    bases = {layer: {("ball x" if k == "claim" else k): q.float() for k, q in spec.items()}}
    t_obs = obs[torch.as_tensor(test)]
    a = greedy_actions(agent, t_obs)
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(0, len(t_obs), (2, 4 * len(t_obs)), generator=g)
    keep = a[i] != a[j]
    if int(keep.sum()) < 8:
        out["patching"] = None
        return out
    i, j = i[keep][:512], j[keep][:512]
    pairs = {"clean": t_obs[i], "corrupt": t_obs[j], "a_clean": a[i], "a_corrupt": a[j]}
    out["patching"] = {r["subspace"]: r for r in subspace_patching(agent, pairs, bases, seed=seed, n_random=2,
                                                                   n_boot=n_boot)}
    out["n_pairs"] = int(len(i))
    return out


@torch.no_grad()
def cache_activations_batched(agent, obs: Tensor, layer: str, batch: int = 256) -> Tensor:
    from utils.interp.hooks import cache_activations
    return torch.cat([cache_activations(agent, obs[k:k + batch], [layer])[layer].flatten(1)
                      for k in range(0, len(obs), batch)])
