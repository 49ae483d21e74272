"""A released decision transformer, brought in: Hugging Face's gym DT for Hopper (problem 8.8).

`edbeeching/decision-transformer-gym-hopper-medium` (and its siblings `...-hopper-expert`,
`...-hopper-medium-replay`) is `transformers`' `DecisionTransformerModel` (GPT-2 blocks: 3 layers,
1 head, hidden 128; state 11, action 3, tanh actions) trained on D4RL's Hopper "medium" data. The
model card gives the state normalisation (`STATE_MEAN`, `STATE_STD` below, copied from the card);
the returns-to-go are divided by `RETURN_SCALE` (1000, as in Hugging Face's blog and example
script); the context is the last `CONTEXT` (20) steps. Licence: none stated on the model card.

    dt = load_released_dt()                     # the gpu profile; cpu with USE_HUB = True / COURSE_HUB=1
    curve = conditioning_curve(dt, [1800, 3600, 6000], n_episodes=4, max_steps=1000)
    att = attention_to_return(dt, tokens)       # per layer: attention mass from states to RTG tokens

Loading goes through `DecisionTransformerModel.from_pretrained` (the local Hugging Face cache
first). Offline, with the files not in the cache, it stops in one line naming the offline
fixture. `write_hopper_fixture(hub_cache)` writes a RANDOM-weight model of the same class and
full shape, in the hub's cache layout (`utils.lm.fixtures`: `config.json` carrying FIXTURE_MARKER
and `pytorch_model.bin`), so the loader, the rollout and the attention analysis run offline
(tests/test_dt.py; `make rehearse`). The rollouts need `gymnasium[mujoco]` (`mujoco`, pinned in
requirements.txt); without it `make_env` stops in one line. The DTs were trained on Hopper-v3
(mujoco-py); Hopper-v5 (the maintained MuJoCo bindings) has slightly different dynamics, so
expect returns near, not equal to, the paper's.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError

HUB_REPO = "edbeeching/decision-transformer-gym-hopper-medium"
ENV_ID = "Hopper-v5"
# from the model card of edbeeching/decision-transformer-gym-hopper-medium
STATE_MEAN = (1.311279, -0.08469521, -0.5382719, -0.07201576, 0.04932366, 2.1066856, -0.15017354, 0.00878345,
              -0.2848186, -0.18540096, -0.28461286)
STATE_STD = (0.17790751, 0.05444621, 0.21297139, 0.14530419, 0.6124444, 0.85174465, 1.4515252, 0.6751696,
             1.536239, 1.6160746, 5.6072536)
RETURN_SCALE = 1000.0   # returns-to-go are fed divided by this (Hugging Face's blog and example script)
CONTEXT = 20            # steps of context (K in the DT paper's gym experiments)
# the shape of the released config (used by the fixture; the loader reads the real config.json)
FULL_SHAPE = dict(state_dim=11, act_dim=3, hidden_size=128, n_layer=3, n_head=1, n_inner=None, max_ep_len=1000,
                  n_positions=1024, action_tanh=True, activation_function="relu")
OFFLINE_HINT = ("write the offline fixture (random weights, same shape) with `python -m utils.lm fixtures --out "
                "DIR --gemma none` and run with HF_HOME=DIR HF_HUB_OFFLINE=1, or run the chapter without the hub "
                "(PROFILE = \"cpu\", USE_HUB = False)")


@dataclass
class ReleasedDT:
    """The released model with what it needs around it (normalisation, scale, context)."""

    repo_id: str
    model: object           # transformers.DecisionTransformerModel, eval mode, eager attention
    state_mean: Tensor
    state_std: Tensor

    @property
    def is_fixture(self) -> bool:
        from utils.lm.fixtures import is_fixture
        return is_fixture(self.model)

    @property
    def config(self):
        return self.model.config


def load_released_dt(repo_id: str = HUB_REPO) -> ReleasedDT:
    """The released Hopper DT through `DecisionTransformerModel.from_pretrained` (cache first), on the
    CPU in float32 with eager attention (so attention weights can be read). One-line CourseError
    offline without the files, naming the offline fixture."""
    try:
        from transformers import DecisionTransformerModel
    except ImportError:
        raise CourseError("the released DT needs transformers' DecisionTransformerModel: pip install "
                          "transformers==5.23.0 (pinned in requirements.txt)") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = DecisionTransformerModel.from_pretrained(repo_id, attn_implementation="eager")
    except Exception as e:  # OSError offline / not found; anything from a broken download
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise CourseError(f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                              f"{OFFLINE_HINT}") from None
        first = str(e).splitlines()[0] if str(e) else ""
        raise CourseError(f"could not load {repo_id} ({type(e).__name__}: {first[:160]}): check the connection, "
                          f"or {OFFLINE_HINT}") from None
    cfg = model.config
    if (cfg.state_dim, cfg.act_dim) != (len(STATE_MEAN), FULL_SHAPE["act_dim"]):
        raise CourseError(f"{repo_id}: state_dim {cfg.state_dim} / act_dim {cfg.act_dim} are not Hopper's (11 / 3): "
                          "the normalisation here is Hopper-medium's model card")
    model.float().eval()
    return ReleasedDT(repo_id, model, torch.tensor(STATE_MEAN), torch.tensor(STATE_STD))


def make_env(**kwargs):
    """gymnasium's Hopper-v5 (needs the `mujoco` package); one line if it is missing."""
    try:
        import gymnasium as gym
        import mujoco  # noqa: F401
    except ImportError:
        raise CourseError("the Hopper rollouts need MuJoCo: pip install mujoco==4.0.1 (pinned in requirements.txt); "
                          "the attention analysis runs without it") from None
    return gym.make(ENV_ID, **kwargs)


def dt_inputs(dt: ReleasedDT, states: Tensor, actions: Tensor, rtg: Tensor, timesteps: Tensor) -> dict:
    """The model's keyword inputs for raw states [B, T, 11], actions [B, T, 3], returns-to-go [B, T]
    (in return units) and timesteps [B, T]: states normalised with the model card's mean and std,
    returns divided by RETURN_SCALE, the last CONTEXT steps kept."""
    states, actions, rtg, timesteps = (x[:, -CONTEXT:] for x in (states, actions, rtg, timesteps))
    b, t = states.shape[:2]
    return dict(states=((states - dt.state_mean) / dt.state_std).float(), actions=actions.float(),
                rewards=torch.zeros(b, t, 1), returns_to_go=(rtg / RETURN_SCALE).float()[..., None],
                timesteps=timesteps.long().clamp_max(dt.config.max_ep_len - 1),
                attention_mask=torch.ones(b, t, dtype=torch.long))


@torch.no_grad()
def rollout(dt: ReleasedDT, target_return: float, n_episodes: int = 4, max_steps: int = 1000,
            seed: int = 0) -> dict[str, np.ndarray]:
    """n_episodes of Hopper-v5 in lockstep (one batched forward per step), asking for
    `target_return` (the RTG falls by each reward received). Returns return [n], length [n] and the
    last context's inputs (for the attention analysis)."""
    envs = [make_env() for _ in range(n_episodes)]
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    n = n_episodes
    states = torch.tensor(obs, dtype=torch.float32)[:, None]
    actions = torch.zeros(n, 1, 3)
    rtg = torch.full((n, 1), float(target_return))
    timesteps = torch.zeros(n, 1, dtype=torch.long)
    ret, length = np.zeros(n), np.zeros(n, dtype=int)
    done = np.zeros(n, dtype=bool)
    for t in range(max_steps):
        out = dt.model(**dt_inputs(dt, states, actions, rtg, timesteps))
        act = out.action_preds[:, -1].clamp(-1, 1)
        actions[:, -1] = act
        new_obs, rew = obs.copy(), np.zeros(n)
        for i, e in enumerate(envs):
            if done[i]:
                continue
            o, r, term, trunc, _ = e.step(act[i].numpy())
            new_obs[i], rew[i] = o, r
            ret[i] += r
            length[i] += 1
            done[i] = term or trunc
        if done.all() or t == max_steps - 1:
            break
        obs = new_obs
        states = torch.cat([states, torch.tensor(obs, dtype=torch.float32)[:, None]], 1)[:, -CONTEXT:]
        actions = torch.cat([actions, torch.zeros(n, 1, 3)], 1)[:, -CONTEXT:]
        rtg = torch.cat([rtg, (rtg[:, -1] - torch.tensor(rew, dtype=torch.float32))[:, None]], 1)[:, -CONTEXT:]
        timesteps = torch.cat([timesteps, timesteps[:, -1:] + 1], 1)[:, -CONTEXT:]
    for e in envs:
        e.close()
    return {"return": ret, "length": length, "context": (states, actions, rtg, timesteps)}


def conditioning_curve(dt: ReleasedDT, requests, n_episodes: int = 4, max_steps: int = 1000,
                       seed: int = 0) -> dict[float, np.ndarray]:
    """{requested return: achieved returns [n_episodes]}: the DT paper's conditioning curve, the
    same start states (seeds) for every request."""
    return {float(r): rollout(dt, float(r), n_episodes, max_steps, seed)["return"] for r in requests}


@torch.no_grad()
def attention_to_return(dt: ReleasedDT, states: Tensor, actions: Tensor, rtg: Tensor, timesteps: Tensor) -> Tensor:
    """Per layer and head [n_layers, n_heads]: the mean attention mass that the state tokens (where
    the actions are predicted) put on ALL return-to-go tokens they can see. The model interleaves
    (R_t, s_t, a_t) as positions 3t, 3t + 1, 3t + 2, as the course's DT does."""
    out = dt.model(**dt_inputs(dt, states, actions, rtg, timesteps), output_attentions=True)
    att = torch.stack(out.attentions, 1)           # [B, L, H, 3T, 3T]
    p = att.shape[-1]
    rtg_keys = (torch.arange(p) % 3 == 0).to(att.dtype)
    q = torch.arange(1, p, 3)                      # the state positions
    return (att[..., q, :] * rtg_keys).sum(-1).mean((0, 3))


def uniform_return_share(t: int) -> float:
    """What a uniform causal head at the state positions of a T-step context puts on the RTG tokens."""
    q = np.arange(1, 3 * t, 3)
    return float(np.mean([(k // 3 + 1) / (k + 1) for k in q]))


# ------------------------------------------------------------------ the offline fixture
def write_hopper_fixture(hub_cache: str | os.PathLike, repo_id: str = HUB_REPO, seed: int = 0) -> dict:
    """Write a random-weight DecisionTransformerModel at the released model's full shape into a
    Hugging Face cache (`<HF_HOME>/hub`): `config.json` (carrying FIXTURE_MARKER) and
    `pytorch_model.bin` (a torch state dict, the released repository's format)."""
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    from utils.lm.fixtures import FIXTURE_MARKER, MARKER_TEXT, _put, repo_snapshot

    snap = repo_snapshot(Path(hub_cache), repo_id)
    cfg = DecisionTransformerConfig(**FULL_SHAPE, architectures=["DecisionTransformerModel"])
    setattr(cfg, FIXTURE_MARKER, MARKER_TEXT)
    with tempfile.TemporaryDirectory() as d, torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        model = DecisionTransformerModel(cfg)
        cfg.save_pretrained(d)
        torch.save(model.state_dict(), Path(d) / "pytorch_model.bin")
        _put(snap, "config.json", Path(d) / "config.json")
        _put(snap, "pytorch_model.bin", Path(d) / "pytorch_model.bin")
    n_params = sum(p.numel() for p in model.parameters())
    return {"repo": repo_id, "files": ["config.json", "pytorch_model.bin"],
            "shape": f"full (DecisionTransformerModel, {n_params} parameters: 3 layers, 1 head, hidden 128)"}
