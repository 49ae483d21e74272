"""The released procgen maze policy (Langosco et al. 2022; Turner, Mini et al. 2023), owned by the course.

The agent every cheese-vector result is about is an IMPALA network trained with
train-procgen-pytorch and published as `model_rand_region_5.pth` (a `torch.save` dict whose
"model_state_dict" holds the weights). It is not on the Hugging Face hub and its authors state no
licence: the learner gives a local path, or a URL to download once (procgen-tools downloads it from
https://nerdsniper.net/mats/model_rand_region_5.pth). `ImpalaPolicy` has the same state-dict keys as
procgen-tools' `InterpretableImpalaModel` (which cannot be installed with its dependencies on current
Python), so the file loads with `load_state_dict(strict=True)`:

    embedder.block{1,2,3}.conv, embedder.block{1,2,3}.res{1,2}.conv{1,2}, embedder.fc, fc_policy, fc_value

At scale 4 (read from `embedder.block1.conv.weight`, 16 x scale channels) it has 3,653,136
parameters, takes [batch, 3, 64, 64] floats in [0, 1] (`preprocess` turns procgen's uint8 HWC frames
into that) and outputs 15 procgen action logits. It is a HookedRootModule; the hook the cheese-vector
work edits is `embedder.block2.res1.hook_resadd_out` ([batch, 128, 16, 16]); `RESADD_OUT` names it.

    policy = load_maze_policy("/path/to/model_rand_region_5.pth")      # or url=...
    logits = policy(preprocess(obs))

`write_maze_fixture(path)` writes a random-weight file in the released format at full shape (about
15 MB) with a "course_fixture" key, so the loader, the hooks and the chapter's real-agent section run
offline (tests/test_goal_misgen_impala.py).
"""
from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookedRootModule, HookPoint

from utils.core import CourseError

RELEASED_URL = "https://nerdsniper.net/mats/model_rand_region_5.pth"
RESADD_OUT = "embedder.block2.res1.hook_resadd_out"
N_ACTIONS = 15
FIXTURE_KEY = "course_fixture"
CHEESE_CHANNELS = (7, 8, 42, 44, 55, 77, 82, 88, 89, 99, 113)   # Turner, Mini et al. 2023: block2.res1
OFFLINE_HINT = ("run chapter 06 on its own agents (PROFILE = 'cpu'), or write a random-weight stand-in with "
                "utils.goal_misgen.impala.write_maze_fixture(path) and load that")


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.hook_resadd_out = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        return self.hook_resadd_out(out + x)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.res1, self.res2 = _Residual(c_out), _Residual(c_out)
        self.hook_out = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.conv(x), kernel_size=3, stride=2, padding=1)
        return self.hook_out(self.res2(self.res1(x)))


class _Embedder(nn.Module):
    def __init__(self, scale: int):
        super().__init__()
        self.block1 = _Block(3, 16 * scale)
        self.block2 = _Block(16 * scale, 32 * scale)
        self.block3 = _Block(32 * scale, 32 * scale)
        self.fc = nn.Linear(32 * scale * 8 * 8, 256)
        self.hook_fc_out = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.block3(self.block2(self.block1(x))))
        return self.hook_fc_out(F.relu(self.fc(x.flatten(1))))


class ImpalaPolicy(HookedRootModule):
    """IMPALA actor-critic with procgen-tools' state-dict keys (see the module docstring)."""

    def __init__(self, scale: int = 4, n_actions: int = N_ACTIONS):
        super().__init__()
        if scale < 1 or n_actions < 1:
            raise CourseError(f"ImpalaPolicy needs scale >= 1 and n_actions >= 1, got {scale}, {n_actions}")
        self.scale, self.n_actions = scale, n_actions
        self.embedder = _Embedder(scale)
        self.fc_policy = nn.Linear(256, n_actions)
        self.fc_value = nn.Linear(256, 1)
        self.hook_logits, self.hook_value = HookPoint(), HookPoint()
        self.setup()

    def forward_both(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        if obs.ndim != 4 or tuple(obs.shape[1:]) != (3, 64, 64):
            raise CourseError(f"observations must be [batch, 3, 64, 64] floats in [0, 1] (use preprocess on "
                              f"procgen's uint8 frames), got {tuple(obs.shape)}")
        h = self.embedder(obs.float())
        return self.hook_logits(self.fc_policy(h)), self.hook_value(self.fc_value(h).squeeze(-1))

    def forward(self, obs: Tensor) -> Tensor:
        return self.forward_both(obs)[0]


def preprocess(frames) -> Tensor:
    """procgen frames (uint8 [batch, 64, 64, 3] or [64, 64, 3]) -> floats [batch, 3, 64, 64] in [0, 1]."""
    x = torch.as_tensor(np.asarray(frames))
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (64, 64, 3):
        raise CourseError(f"procgen frames are [batch, 64, 64, 3] uint8, got {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float() / 255.0


def scale_of(state: dict) -> int:
    key = "embedder.block1.conv.weight"
    if key not in state:
        raise CourseError(f"not a procgen IMPALA checkpoint: no {key} among {sorted(state)[:3]} ...")
    return int(state[key].shape[0]) // 16


def load_maze_policy(path: str | os.PathLike | None = None, url: str | None = None,
                     cache_dir: str | os.PathLike = "_build/released") -> ImpalaPolicy:
    """The released maze policy from a local `path`, or downloaded once from `url` (e.g. RELEASED_URL)
    into `cache_dir`. A missing file, a failed download or a file of another format stops in one line."""
    if path is None:
        if url is None:
            raise CourseError("give the path of model_rand_region_5.pth, or url=RELEASED_URL to download it once: "
                              + OFFLINE_HINT)
        path = Path(cache_dir) / Path(url).name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                urllib.request.urlretrieve(url, str(path) + ".part")
            except Exception as e:  # noqa: BLE001 - any failure to download gets the same advice
                raise CourseError(f"could not download {url} ({type(e).__name__}): {OFFLINE_HINT}") from None
            os.replace(str(path) + ".part", path)
    path = Path(path)
    if not path.exists():
        raise CourseError(f"{path} does not exist: {OFFLINE_HINT}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CourseError(f"{path} is not a readable torch checkpoint ({type(e).__name__}): download it again") from None
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CourseError(f"{path} holds no state dict (expected a dict with 'model_state_dict')")
    policy = ImpalaPolicy(scale=scale_of(state), n_actions=int(state["fc_policy.weight"].shape[0]))
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CourseError(f"{path} does not match procgen-tools' IMPALA keys: {str(e).splitlines()[0]}") from None
    policy.fixture = bool(isinstance(ckpt, dict) and ckpt.get(FIXTURE_KEY))
    return policy.eval()


def write_maze_fixture(path: str | os.PathLike, seed: int = 0, scale: int = 4) -> Path:
    """A random-weight file in the released format at full shape (marked with FIXTURE_KEY)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = ImpalaPolicy(scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": policy.state_dict(), FIXTURE_KEY: True}, path)
    return path
