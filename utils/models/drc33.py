"""The released Sokoban DRC(3,3) of Taufeeque et al. (2024), in PyTorch, owned by the course.

`AlignmentResearch/learned-planner` (Hugging Face hub, Apache-2.0) publishes the agent the planning
papers study (arXiv 2407.15421, 2506.10138) as a flax TrainState in msgpack
(`drc33/bkynosqi/cp_2002944000/model`, 20.6 MB with the optimiser state). Its package cannot be
installed from the registries, so the course reads the file with its own msgpack reader
(`utils.models.flax_msgpack`, no jax) and maps the parameter tree exactly onto `ReleasedDRC`:

- input: Boxoban's 10 x 10 "tinyworld" RGB frame, one pixel per tile, uint8 [B, 3, 10, 10] (divided
  by 255 inside); `tinyworld` turns the course's Sokoban planes into it;
- encoder: two 4 x 4 convolutions, 32 channels, "SAME" padding (1 before, 2 after), no ReLU;
- three ConvLSTM cells of 32 channels ticked 3 times per step. A cell's input is the encoding, the
  hidden state from below (cell 0: the top cell's from the previous tick) and its own previous
  hidden state max- and mean-pooled over the board, mixed per channel by `project` [2, 32] and
  broadcast. gates = ih(input) + hh(h) + fence, where the fence is a 3 x 3 "valid" convolution of a
  border image (ones on a one-tile frame around the board); the gates (i, j, f, o) go through
  tanh, sigmoid, sigmoid and **tanh**; c' = f c + i j, h' = tanh(c') o;
- head: (top hidden state + encoding), flattened in height-width-channel order, a 256-unit ReLU
  layer, 4 action logits (up, down, left, right) and a value.

It has the course DRC's interface (`initial_state`, `step`, `hook_name`; hooks `hook_obs`,
`hook_enc`, `hook_h.{layer}.{tick}`, `hook_c.{layer}.{tick}`, `hook_logits`, `hook_value`), and
`step` also takes the course Sokoban's observation planes [B, 5, 10, 10] (rendered with
`tinyworld` first), so the chapter's play, thinking-time, probe and steering code runs on it
unchanged on 10 x 10 levels (`utils.planning.play.play(drc, LevelBank(..., size=10))`; play the
course env without the no-op action's logit: the released agent has four actions).

    drc = load_released_drc()                      # hub (cache first); or load_released_drc(path)
    logits, value, state = drc.step(tinyworld(obs), drc.initial_state(len(obs)))

`write_drc33_file(path)` writes a random-weight checkpoint in the released format at full shape
(the exact tree, without optimiser state) and `write_drc33_fixture(hub)` puts one in a Hugging
Face cache, so the loader and the hooks run offline (tests/test_drc33.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError
from utils.models.drc import DRC
from utils.models.flax_msgpack import packb, unpackb

HUB_REPO = "AlignmentResearch/learned-planner"
HUB_FILE = "drc33/bkynosqi/cp_2002944000/model"
N_PARAMS = 1_285_125
CHANNELS, DEPTH, TICKS, HIDDEN, N_ACTIONS, SIZE = 32, 3, 3, 256, 4, 10
FIXTURE_KEY = "course_fixture"
OFFLINE_HINT = ("run chapter 08 on its own agents (PROFILE = 'cpu'), or write a random-weight stand-in with "
                "utils.models.drc33.write_drc33_file(path) and load that (load_released_drc(path))")
# gym-sokoban's tinyworld palette (render_utils.room_to_tiny_world_rgb)
PALETTE = {"wall": (0, 0, 0), "floor": (243, 248, 238), "target": (254, 126, 125), "box_on_target": (254, 95, 56),
           "box": (142, 121, 56), "agent": (160, 212, 56), "agent_on_target": (219, 212, 56)}


def _same_pad(x: Tensor, k: int) -> Tensor:
    """XLA's "SAME" padding for stride 1: (k - 1) // 2 before, the rest after."""
    lo = (k - 1) // 2
    return F.pad(x, (lo, k - 1 - lo, lo, k - 1 - lo))


class DRC33Cell(nn.Module):
    """One ConvLSTM cell of the released DRC (see the module docstring)."""

    def __init__(self, channels: int = CHANNELS):
        super().__init__()
        self.ih = nn.Conv2d(3 * channels, 4 * channels, 3)
        self.hh = nn.Conv2d(channels, 4 * channels, 3, bias=False)
        self.fence = nn.Conv2d(1, 4 * channels, 3, bias=False)
        self.project = nn.Parameter(torch.zeros(2, channels))

    def forward(self, enc: Tensor, below: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        B, C, H, W = h.shape
        pooled = self.project[0] * h.amax((2, 3)) + self.project[1] * h.mean((2, 3))
        x = torch.cat([enc, below, pooled[:, :, None, None].expand(B, C, H, W)], 1)
        border = torch.ones(B, 1, H + 2, W + 2, dtype=h.dtype, device=h.device)
        border[:, :, 1:-1, 1:-1] = 0
        gates = self.ih(_same_pad(x, 3)) + self.hh(_same_pad(h, 3)) + self.fence(border)
        i, j, f, o = gates.split(C, 1)
        c = c * torch.sigmoid(f) + torch.tanh(i) * torch.sigmoid(j)
        return torch.tanh(c) * torch.tanh(o), c


class ReleasedDRC(HookedRootModule):
    """The DRC(3,3) architecture of learned-planner's `sokoban_drc33_59` (module docstring)."""

    def __init__(self, channels: int = CHANNELS, depth: int = DEPTH, ticks: int = TICKS, hidden: int = HIDDEN,
                 n_actions: int = N_ACTIONS, size: int = SIZE):
        super().__init__()
        self.channels, self.depth, self.ticks, self.hidden, self.n_actions = channels, depth, ticks, hidden, n_actions
        self.obs_shape = (3, size, size)
        self.arch = dict(kind="drc33", channels=channels, depth=depth, ticks=ticks, hidden=hidden,
                         n_actions=n_actions, size=size)
        self.hook_obs = HookPoint()
        self.conv0 = nn.Conv2d(3, channels, 4)
        self.conv1 = nn.Conv2d(channels, channels, 4)
        self.hook_enc = HookPoint()
        self.cells = nn.ModuleList([DRC33Cell(channels) for _ in range(depth)])
        self.hook_h = nn.ModuleList([nn.ModuleList([HookPoint() for _ in range(ticks)]) for _ in range(depth)])
        self.hook_c = nn.ModuleList([nn.ModuleList([HookPoint() for _ in range(ticks)]) for _ in range(depth)])
        self.fc = nn.Linear(channels * size * size, hidden)
        self.actor = nn.Linear(hidden, n_actions)
        self.critic = nn.Linear(hidden, 1)
        self.hook_logits = HookPoint()
        self.hook_value = HookPoint()
        self.fixture = False
        self.setup()

    # the course DRC's state layout and hook names: (h, c) [B, depth, C, H, W], hook_{h,c}.{layer}.{tick}
    initial_state = DRC.initial_state
    check_state = DRC.check_state
    hook_name = DRC.hook_name

    def _obs(self, obs: Tensor) -> Tensor:
        obs = torch.as_tensor(obs)
        if obs.ndim == 4 and obs.shape[1] == 5:   # the course Sokoban's planes: render them first
            obs = tinyworld(obs)
        if obs.ndim != 4 or tuple(obs.shape[1:]) != self.obs_shape:
            raise CourseError(f"the DRC(3,3) reads Boxoban tinyworld frames [batch, 3, {self.obs_shape[1]}, "
                              f"{self.obs_shape[2]}] (uint8 RGB, see tinyworld()), got {tuple(obs.shape)}")
        if obs.is_floating_point() and obs.numel() and float(obs.max()) <= 1.0 and float(obs.max()) > 0:
            raise CourseError("these frames look scaled to [0, 1]: pass the uint8 (0-255) tinyworld frame; the "
                              "network divides by 255 itself")
        return obs.float() / 255.0

    def step(self, obs: Tensor, state=None) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """One environment step (3 ticks of the 3 cells): (logits [B, 4], value [B], new state)."""
        x = self.hook_obs(self._obs(obs))
        B = x.shape[0]
        if state is None:
            state = self.initial_state(B, x.device)
        self.check_state(state, B)
        enc = self.hook_enc(self.conv1(_same_pad(self.conv0(_same_pad(x, 4)), 4)))
        hs, cs = list(state[0].unbind(1)), list(state[1].unbind(1))
        for n in range(self.ticks):
            below = hs[-1]                       # top-down skip from the previous tick
            for d, cell in enumerate(self.cells):
                h, c = cell(enc, below, hs[d], cs[d])
                hs[d], cs[d] = self.hook_h[d][n](h), self.hook_c[d][n](c)
                below = hs[d]
        z = (hs[-1] + enc).permute(0, 2, 3, 1).flatten(1)     # flax flattens NHWC
        z = torch.relu(self.fc(z))
        logits = self.hook_logits(self.actor(z))
        value = self.hook_value(self.critic(z).squeeze(-1))
        return logits, value, (torch.stack(hs, 1), torch.stack(cs, 1))

    def forward(self, obs: Tensor, state=None) -> Tensor:
        return self.step(obs, state)[0]


# ------------------------------------------------------------------ the flax tree
def flax_shapes(channels: int = CHANNELS, depth: int = DEPTH, hidden: int = HIDDEN, n_actions: int = N_ACTIONS,
                size: int = SIZE) -> dict:
    """The released parameter tree, {module: {name: shape}} (flax layouts: HWIO kernels, [in, out] dense)."""
    net = {"conv_list_0": {"kernel": (4, 4, 3, channels), "bias": (channels,)},
           "conv_list_1": {"kernel": (4, 4, channels, channels), "bias": (channels,)},
           "dense_list_0": {"kernel": (channels * size * size, hidden), "bias": (hidden,)}}
    for i in range(depth):
        net[f"cell_list_{i}"] = {"ih": {"kernel": (3, 3, 3 * channels, 4 * channels), "bias": (4 * channels,)},
                                 "hh": {"kernel": (3, 3, channels, 4 * channels)},
                                 "fence": {"kernel": (3, 3, 1, 4 * channels)},
                                 "project": (2, channels)}
    return {"network_params": net, "actor_params": {"Output": {"kernel": (hidden, n_actions), "bias": (n_actions,)}},
            "critic_params": {"Output": {"kernel": (hidden, 1), "bias": (1,)}}}


def _find_params(tree) -> dict | None:
    """The dict holding network_params / actor_params / critic_params, wherever the TrainState puts it."""
    if isinstance(tree, dict):
        if {"network_params", "actor_params", "critic_params"} <= set(tree):
            return tree
        for k, v in tree.items():
            if k == "opt_state":
                continue
            found = _find_params(v)
            if found is not None:
                return found
    return None


def _leaf(tree: dict, path: tuple, shape: tuple) -> np.ndarray:
    node = tree
    for k in path:
        if not isinstance(node, dict) or k not in node:
            raise CourseError(f"the checkpoint has no parameter {'/'.join(path)}: not a learned-planner DRC(3,3) "
                              f"TrainState (expected the tree of utils.models.drc33.flax_shapes())")
        node = node[k]
    arr = np.asarray(node, dtype=np.float32)
    if path[-2:] == ("fence", "kernel") and arr.ndim == 4 and arr.shape[2] > 1:
        arr = arr.sum(2, keepdims=True)        # learned-planner's load_train_state does the same
    if tuple(arr.shape) != tuple(shape):
        raise CourseError(f"parameter {'/'.join(path)} has shape {tuple(arr.shape)}, expected {tuple(shape)}: "
                          "not the DRC(3,3) this loader maps")
    return arr


def state_dict_from_flax(tree: dict, depth: int = DEPTH) -> dict[str, Tensor]:
    """ReleasedDRC's state dict from the released parameter tree (any dict that contains it)."""
    params = _find_params(tree)
    if params is None:
        raise CourseError("no network_params / actor_params / critic_params in the checkpoint: not a "
                          "learned-planner TrainState")
    shapes = flax_shapes(depth=depth)

    def get(*path):
        node = shapes
        for k in path:
            node = node[k]
        return torch.from_numpy(_leaf(params, path, node))

    def conv(k):   # HWIO -> OIHW
        return k.permute(3, 2, 0, 1).contiguous()

    sd = {"conv0.weight": conv(get("network_params", "conv_list_0", "kernel")),
          "conv0.bias": get("network_params", "conv_list_0", "bias"),
          "conv1.weight": conv(get("network_params", "conv_list_1", "kernel")),
          "conv1.bias": get("network_params", "conv_list_1", "bias"),
          "fc.weight": get("network_params", "dense_list_0", "kernel").T.contiguous(),
          "fc.bias": get("network_params", "dense_list_0", "bias"),
          "actor.weight": get("actor_params", "Output", "kernel").T.contiguous(),
          "actor.bias": get("actor_params", "Output", "bias"),
          "critic.weight": get("critic_params", "Output", "kernel").T.contiguous(),
          "critic.bias": get("critic_params", "Output", "bias")}
    for i in range(depth):
        cell = ("network_params", f"cell_list_{i}")
        sd[f"cells.{i}.ih.weight"] = conv(get(*cell, "ih", "kernel"))
        sd[f"cells.{i}.ih.bias"] = get(*cell, "ih", "bias")
        sd[f"cells.{i}.hh.weight"] = conv(get(*cell, "hh", "kernel"))
        sd[f"cells.{i}.fence.weight"] = conv(get(*cell, "fence", "kernel"))
        sd[f"cells.{i}.project"] = get(*cell, "project")
    return sd


def load_drc33_file(path: str | os.PathLike) -> ReleasedDRC:
    """A ReleasedDRC from a learned-planner `model` file (flax msgpack TrainState) at `path`."""
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"no DRC(3,3) checkpoint at {path}: give the path of learned-planner's "
                          f"{HUB_FILE!r}, or {OFFLINE_HINT}")
    try:
        tree = unpackb(path.read_bytes())
    except CourseError as e:
        raise CourseError(f"{path} is not a readable flax checkpoint ({e})") from None
    model = ReleasedDRC()
    model.load_state_dict(state_dict_from_flax(tree), strict=True)
    model.fixture = bool(isinstance(tree, dict) and tree.get(FIXTURE_KEY))
    return model.eval()


def load_released_drc(path: str | os.PathLike | None = None, repo_id: str = HUB_REPO,
                      filename: str = HUB_FILE) -> ReleasedDRC:
    """The released DRC(3,3): from `path`, else from the Hugging Face cache (downloaded when the hub
    is reachable and HF_HUB_OFFLINE is not set). Offline without the file: one-line CourseError."""
    if path is not None:
        return load_drc33_file(path)
    from huggingface_hub import hf_hub_download
    import huggingface_hub.constants as hc

    from utils.lm.api import hub_offline_env

    offline = bool(hc.HF_HUB_OFFLINE) or hub_offline_env()
    try:
        local = hf_hub_download(repo_id, filename, local_files_only=offline)
    except Exception as e:  # noqa: BLE001 - every failure to find the file gets the same advice
        raise CourseError(f"{repo_id}/{filename} is not in the local Hugging Face cache and the hub is unavailable "
                          f"({type(e).__name__}): {OFFLINE_HINT}") from None
    return load_drc33_file(local)


# ------------------------------------------------------------------ observations
def tinyworld(planes: Tensor) -> Tensor:
    """Boxoban's tinyworld frame, uint8 [B, 3, H, W], from the course Sokoban's observation planes
    [B, 5, H, W] (wall, floor, target, box, agent; utils.envs.sokoban.CHANNELS)."""
    planes = torch.as_tensor(planes)
    if planes.ndim != 4 or planes.shape[1] != 5:
        raise CourseError(f"tinyworld needs the course Sokoban's planes [batch, 5, H, W], got {tuple(planes.shape)}")
    wall, _, target, box, agent = (planes[:, k] > 0.5 for k in range(5))
    out = torch.empty(planes.shape[0], planes.shape[2], planes.shape[3], 3, dtype=torch.uint8)
    out[:] = torch.tensor(PALETTE["floor"], dtype=torch.uint8)
    for mask, name in ((target, "target"), (box, "box"), (box & target, "box_on_target"), (agent, "agent"),
                       (agent & target, "agent_on_target"), (wall, "wall")):
        out[mask] = torch.tensor(PALETTE[name], dtype=torch.uint8)
    return out.permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------ the offline fixture
def random_flax_tree(seed: int = 0) -> dict:
    """A TrainState-shaped dict with random parameters at the released shapes (no optimiser state)."""
    rng = np.random.default_rng(seed)

    def fill(node):
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        fan_in = int(np.prod(node[:-1])) if len(node) > 1 else 1
        return (rng.standard_normal(node) / np.sqrt(max(fan_in, 1))).astype(np.float32)

    return {"step": np.asarray(0, dtype=np.int32), "params": {"params": fill(flax_shapes())}, FIXTURE_KEY: True}


def write_drc33_file(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a random-weight DRC(3,3) checkpoint in the released format (flax msgpack) at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(packb(random_flax_tree(seed)))
    return path


def write_drc33_fixture(hub_cache: str | os.PathLike, seed: int = 0) -> dict:
    """Put a random-weight DRC(3,3) `model` into a Hugging Face cache (`<HF_HOME>/hub`) under the
    released repository and file name, so load_released_drc() finds it offline."""
    import tempfile

    from utils.lm.fixtures import _put, repo_snapshot

    snap = repo_snapshot(Path(hub_cache), HUB_REPO)
    with tempfile.TemporaryDirectory() as d:
        _put(snap, HUB_FILE, write_drc33_file(Path(d) / "model", seed))
    return {"repo": HUB_REPO, "files": [HUB_FILE],
            "shape": f"full (ReleasedDRC, {N_PARAMS} parameters: DRC(3,3), 32 channels, 10 x 10 tinyworld)"}
