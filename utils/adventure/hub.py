"""A released agent, brought in: RL Zoo's PPO on MiniGrid DoorKey-5x5 from the Hugging Face hub.

Chapter 12's worked agents are trained here; this is the same task solved by someone else, with
their choices: `sb3/ppo-MiniGrid-DoorKey-5x5-v0` (RL Baselines3 Zoo, Stable-Baselines3's training framework) sees
minigrid's `FlatObsWrapper` observation (the 7x7x3 view flattened, then the mission string
one-hot, 96 characters) behind a `VecNormalize` (running mean and variance of the observations,
clipped), which the hub repository stores beside the model as `vec_normalize.pkl`. Licence: none
stated (the model card, https://huggingface.co/sb3/ppo-MiniGrid-DoorKey-5x5-v0, names none; the
course lists it so in data/manifest.json, "released").

    hub = load_hub_agent()          # the gpu profile; cpu with USE_HUB = True or COURSE_HUB=1
    agent = hub.adapt()             # adapt(policy, preprocess=hub.normalize): raw observations in
    env = hub.make_env()            # DoorKey-5x5 with the observation this agent was trained on

Loading unpickles the hub files (an SB3 zip holds pickled objects): `huggingface_sb3.load_from_hub`
(package `sb3-team-hf-integration`) refuses unless TRUST_REMOTE_CODE=True, which the loader
sets for its own call only. Only load repositories you trust. Offline, with the files not in
the local cache, it stops in one line naming the offline alternative.

`write_hub_fixture(hub_cache)` writes the same two files with RANDOM weights in the hub's cache
layout (`utils.lm.fixtures`: models--sb3--.../snapshots/<commit>/...), so that the loader, the
adapter and the chapter's hub section run offline (tests/test_adventure.py; `make rehearse`).
A fixture carries `utils.lm.fixtures.FIXTURE_MARKER` in the model's data: `is_fixture` reads it.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from utils.core import CourseError

HUB_REPO = "sb3/ppo-MiniGrid-DoorKey-5x5-v0"
ENV_ID = "MiniGrid-DoorKey-5x5-v0"
NORM_FILE = "vec_normalize.pkl"
MAX_STR_LEN = 96        # FlatObsWrapper's mission length
IMAGE_SIZE = 7 * 7 * 3  # the egocentric view, flattened
OFFLINE_HINT = ('run the chapter without the hub (PROFILE = "cpu" and USE_HUB = False): the agents it trains '
                "or ships")


def model_file(repo_id: str) -> str:
    """The zip's name in an RL Zoo repository: `sb3/ppo-MiniGrid-DoorKey-5x5-v0` -> `ppo-MiniGrid-DoorKey-5x5-v0.zip`."""
    return repo_id.split("/")[-1] + ".zip"


@contextlib.contextmanager
def _trusted():
    old = os.environ.get("TRUST_REMOTE_CODE")
    os.environ["TRUST_REMOTE_CODE"] = "True"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TRUST_REMOTE_CODE", None)
        else:
            os.environ["TRUST_REMOTE_CODE"] = old


def _download(repo_id: str, filename: str, required: bool = True, hint: str | None = None) -> str | None:
    """The local path of `repo_id`/`filename` (the hub cache first). Offline or unreachable: one
    line that ends with `hint` (default: chapter 12's OFFLINE_HINT); `required=False` gives None
    for a file the repository lacks."""
    hint = OFFLINE_HINT if hint is None else hint
    try:
        from huggingface_sb3 import load_from_hub
    except ImportError:
        raise CourseError("the hub agent needs the huggingface_sb3 module: pip install sb3-team-hf-integration==3.2 "
                          "(pinned in requirements.txt)") from None
    try:
        with _trusted():
            return load_from_hub(repo_id, filename)
    except Exception as e:
        if not required and type(e).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
            return None
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            if not required:
                return None
            raise CourseError(f"{repo_id}/{filename} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                              f"unset it where the hub is reachable, or {hint}") from None
        raise CourseError(f"could not get {repo_id}/{filename} from the Hugging Face hub ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}): check the connection, or {hint}") from None


def _zip_shapes(path: str) -> tuple[int, int]:
    """(observation size, number of actions) read from the zip's policy weights, without unpickling."""
    with zipfile.ZipFile(path) as z:
        if "policy.pth" not in z.namelist():
            raise CourseError(f"{Path(path).name} is not a Stable-Baselines3 zip (no policy.pth inside)")
        with z.open("policy.pth") as f, tempfile.TemporaryDirectory() as d:
            tmp = Path(d) / "policy.pth"
            tmp.write_bytes(f.read())
            state = torch.load(tmp, map_location="cpu", weights_only=True)
    first = [k for k in state if k.startswith("mlp_extractor.policy_net.0.weight")]
    if not first or "action_net.weight" not in state:
        raise CourseError(f"{Path(path).name}: expected an MlpPolicy (mlp_extractor.policy_net.0, action_net), got "
                          f"{sorted(state)[:4]} ...")
    return int(state[first[0]].shape[1]), int(state["action_net.weight"].shape[0])


def flat_obs_env(n_char_codes: int, env_id: str = ENV_ID, **kwargs):
    """DoorKey with minigrid's FlatObsWrapper observation, its mission one-hot over `n_char_codes`
    characters (28 in minigrid 3; a zip trained with an older minigrid may have used fewer): the
    observation the hub agent was trained on (uint8 [147 + 96 * n_char_codes])."""
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the MiniGrid ids)
    from gymnasium import spaces
    from minigrid.wrappers import FlatObsWrapper

    class _FlatObs(FlatObsWrapper):
        def __init__(self, env):
            super().__init__(env, maxStrLen=MAX_STR_LEN)
            self.numCharCodes = n_char_codes
            self.observation_space = spaces.Box(0, 255, (IMAGE_SIZE + n_char_codes * MAX_STR_LEN,), np.uint8)

    return _FlatObs(gym.make(env_id, **kwargs))


@dataclass
class HubAgent:
    """A released SB3 agent with what it needs around it."""

    repo_id: str
    model: object                 # the SB3 algorithm (PPO)
    normalize: Callable | None    # raw observations -> what the policy was trained on (VecNormalize), or None
    n_char_codes: int
    path: str

    @property
    def policy(self):
        return self.model.policy

    @property
    def is_fixture(self) -> bool:
        from utils.lm.fixtures import FIXTURE_MARKER
        return bool(getattr(self.model, FIXTURE_MARKER, False))

    def make_env(self, **kwargs):
        """DoorKey-5x5 returning the observation this agent was trained on (raw: `normalize` is applied
        by the adapted agent)."""
        return flat_obs_env(self.n_char_codes, **kwargs)

    def adapt(self, **kwargs):
        """`adapt(policy, preprocess=normalize)`: the adapted agent takes the env's raw observations."""
        from utils.interp.adapters import adapt
        return adapt(self.model, preprocess=self.normalize, **kwargs)


def _normalizer(path: str, obs_size: int) -> Callable | None:
    with open(path, "rb") as f:
        vn = pickle.load(f)   # trusted: the learner opted in (see the module docstring)
    if not getattr(vn, "norm_obs", True):
        return None
    rms = vn.obs_rms
    mean = torch.as_tensor(np.asarray(rms.mean), dtype=torch.float32)
    var = torch.as_tensor(np.asarray(rms.var), dtype=torch.float32)
    if mean.shape != (obs_size,):
        raise CourseError(f"{NORM_FILE}: observation statistics of shape {tuple(mean.shape)} do not fit the policy's "
                          f"observation size {obs_size}")
    eps, clip = float(getattr(vn, "epsilon", 1e-8)), float(getattr(vn, "clip_obs", 10.0))

    def normalize(obs):
        x = torch.as_tensor(obs).float()
        return torch.clamp((x - mean.to(x.device)) / torch.sqrt(var.to(x.device) + eps), -clip, clip)

    normalize.stats = {"mean": mean, "var": var, "epsilon": eps, "clip_obs": clip}
    return normalize


def load_hub_agent(repo_id: str = HUB_REPO) -> HubAgent:
    """The released agent (PPO, MlpPolicy) from the hub, through `huggingface_sb3.load_from_hub` (the
    local cache first), on the CPU, with its observation normaliser. The observation and action
    spaces are rebuilt from the weights' shapes (zips written by older SB3 or gym versions pickle
    spaces that newer ones cannot read), and the training-only schedules are replaced."""
    from gymnasium import spaces
    from stable_baselines3 import PPO

    path = _download(repo_id, model_file(repo_id))
    obs_size, n_actions = _zip_shapes(path)
    n_codes, rest = divmod(obs_size - IMAGE_SIZE, MAX_STR_LEN)
    if rest or n_codes < 27:
        raise CourseError(f"{repo_id}: an observation of size {obs_size} is not DoorKey's FlatObsWrapper observation "
                          f"(147 + 96 x the number of mission characters)")
    custom = {"observation_space": spaces.Box(0, 255, (obs_size,), np.uint8), "action_space": spaces.Discrete(n_actions),
              "learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    try:
        with _trusted():
            model = PPO.load(path, device="cpu", custom_objects=custom)
    except Exception as e:
        raise CourseError(f"{repo_id}: Stable-Baselines3 could not load {Path(path).name} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    model.policy.eval()
    norm_path = _download(repo_id, NORM_FILE, required=False)
    normalize = _normalizer(norm_path, obs_size) if norm_path else None
    return HubAgent(repo_id, model, normalize, n_codes, path)


# ------------------------------------------------------------------ the offline fixture
def write_hub_fixture(hub_cache: str | os.PathLike, repo_id: str = HUB_REPO, seed: int = 0) -> dict:
    """Write a random-weight stand-in of the hub agent into a Hugging Face cache (`<HF_HOME>/hub`):
    the SB3 zip (PPO MlpPolicy, the RL Zoo's default architecture, on the FlatObsWrapper observation
    at full size) and a `vec_normalize.pkl` with running statistics from random-policy steps. The
    model's data carries FIXTURE_MARKER. Returns {"repo", "files", "shape"}."""
    import warnings

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from utils.lm.fixtures import FIXTURE_MARKER, MARKER_TEXT, _put, repo_snapshot

    snap = repo_snapshot(Path(hub_cache), repo_id)
    with tempfile.TemporaryDirectory() as d, torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        venv = VecNormalize(DummyVecEnv([lambda: flat_obs_env(28)]), norm_obs=True, norm_reward=True)
        venv.seed(seed)
        venv.reset()
        rng = np.random.default_rng(seed)
        for _ in range(64):
            venv.step(rng.integers(0, 7, size=1))
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, seed=seed, device="cpu")
        setattr(model, FIXTURE_MARKER, MARKER_TEXT)
        zpath, npath = Path(d) / model_file(repo_id), Path(d) / NORM_FILE
        model.save(zpath)
        venv.save(npath)
        venv.close()
        _put(snap, model_file(repo_id), zpath)
        _put(snap, NORM_FILE, npath)
    return {"repo": repo_id, "files": [model_file(repo_id), NORM_FILE],
            "shape": f"PPO MlpPolicy {IMAGE_SIZE + 28 * MAX_STR_LEN} -> 64 -> 64 -> 7"}
