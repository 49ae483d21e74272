"""Deep Repeated ConvLSTM (DRC) agent of Guez et al. (2019), scaled down, and its feed-forward twin.

DRC(D, N): an encoder convolution, then D stacked ConvLSTM cells ticked N times per environment
step, then a small actor-critic head. The connections of the paper:

- **encoder skip**: every cell reads the encoded observation at every tick;
- **top-down skip**: cell 0 reads the top cell's hidden state from the previous tick (cell d > 0
  reads cell d - 1 at the same tick);
- **pool-and-inject**: every cell reads a linear map of the max- and mean-pooled (over the
  board) hidden state it had at the previous tick, broadcast over the board, so information
  crosses the board in one tick;
- **output skip**: the head reads the top cell's hidden state and the encoded observation.

Hook names (all TransformerLens HookPoints): `hook_obs` [B, 5, H, W], `hook_enc` [B, C, H, W],
`hook_h.{d}.{n}` and `hook_c.{d}.{n}` (hidden and cell state of layer d after tick n, each
[B, C, H, W]), `hook_logits` [B, A], `hook_value` [B]. `hook_name("h", layer, tick)` builds and
checks a name.

The recurrent state is a tuple `(h, c)` of tensors [B, D, C, H, W]. Every agent here has
`initial_state(batch)` and `step(obs, state) -> (logits, value, state)`, which is all that
utils.rl.recurrent_ppo needs; `ConvBaseline` (a HookedConvPolicy with an empty state) is the
feed-forward control, built with a parameter count matched to a DRC by `matched_baseline`.

Reference: Guez et al. 2019, "An investigation of model-free planning" (ICML).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError
from utils.models.conv_policy import HookedConvPolicy

State = tuple[Tensor, ...]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell with the DRC inputs: (encoded obs, input from below, pool-and-inject, own h)."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.gates = nn.Conv2d(4 * channels, 4 * channels, kernel, padding=kernel // 2)
        self.pool = nn.Linear(2 * channels, channels)
        with torch.no_grad():   # forget-gate bias 1: keep the cell state early in training
            self.gates.bias[channels:2 * channels] += 1.0

    def forward(self, enc: Tensor, below: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        pooled = torch.cat([h.amax((2, 3)), h.mean((2, 3))], 1)
        inject = self.pool(pooled)[:, :, None, None].expand_as(h)
        i, f, o, g = self.gates(torch.cat([enc, below, inject, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class DRC(HookedRootModule):
    """DRC(depth, ticks) actor-critic on [B, C_obs, H, W] observations (see the module docstring)."""

    def __init__(self, obs_shape: Sequence[int] = (5, 7, 7), n_actions: int = 5, channels: int = 16,
                 depth: int = 2, ticks: int = 2, hidden: int = 64):
        super().__init__()
        obs_shape = tuple(int(s) for s in obs_shape)
        if len(obs_shape) != 3 or min(obs_shape) <= 0:
            raise CourseError(f"DRC needs obs_shape (C, H, W), got {obs_shape}")
        for name, v in (("n_actions", n_actions), ("channels", channels), ("depth", depth), ("ticks", ticks),
                        ("hidden", hidden)):
            if not isinstance(v, int) or v < 1:
                raise CourseError(f"DRC: {name} must be a positive int, got {v!r}")
        self.obs_shape, self.n_actions = obs_shape, n_actions
        self.channels, self.depth, self.ticks, self.hidden = channels, depth, ticks, hidden
        self.arch = dict(obs_shape=obs_shape, n_actions=n_actions, channels=channels, depth=depth, ticks=ticks,
                         hidden=hidden)
        _, H, W = obs_shape
        self.hook_obs = HookPoint()
        self.encoder = nn.Conv2d(obs_shape[0], channels, 3, padding=1)
        self.hook_enc = HookPoint()
        self.cells = nn.ModuleList([ConvLSTMCell(channels) for _ in range(depth)])
        self.hook_h = nn.ModuleList([nn.ModuleList([HookPoint() for _ in range(ticks)]) for _ in range(depth)])
        self.hook_c = nn.ModuleList([nn.ModuleList([HookPoint() for _ in range(ticks)]) for _ in range(depth)])
        self.fc = nn.Linear(2 * channels * H * W, hidden)
        self.actor = nn.Linear(hidden, n_actions)
        self.critic = nn.Linear(hidden, 1)
        self.hook_logits = HookPoint()
        self.hook_value = HookPoint()
        self.setup()

    # ------------------------------------------------------------------ state and names
    def initial_state(self, batch: int, device=None) -> State:
        _, H, W = self.obs_shape
        z = torch.zeros(batch, self.depth, self.channels, H, W, device=device)
        return (z, z.clone())

    def check_state(self, state: State, batch: int) -> None:
        _, H, W = self.obs_shape
        want = (batch, self.depth, self.channels, H, W)
        if (not isinstance(state, (tuple, list)) or len(state) != 2
                or any(tuple(s.shape) != want for s in state)):
            got = [tuple(s.shape) for s in state] if isinstance(state, (tuple, list)) else type(state).__name__
            raise CourseError(f"DRC state must be (h, c), each of shape {want}, got {got}: "
                              "start from model.initial_state(batch)")

    def hook_name(self, kind: str, layer: int, tick: int) -> str:
        """'hook_h.{layer}.{tick}' (kind 'h') or 'hook_c.{layer}.{tick}' (kind 'c'), checked."""
        if kind not in ("h", "c"):
            raise CourseError(f"unknown state kind {kind!r}: use 'h' (hidden) or 'c' (cell)")
        if not isinstance(layer, int) or not 0 <= layer < self.depth:
            raise CourseError(f"unknown layer {layer!r}: this DRC({self.depth}, {self.ticks}) has layers 0..{self.depth - 1}")
        if not isinstance(tick, int) or not 0 <= tick < self.ticks:
            raise CourseError(f"unknown tick {tick!r}: this DRC({self.depth}, {self.ticks}) has ticks 0..{self.ticks - 1}")
        return f"hook_{kind}.{layer}.{tick}"

    # ------------------------------------------------------------------ forward
    def _obs(self, obs: Tensor) -> Tensor:
        if obs.ndim == 2 and obs.shape[1] == self.obs_shape[0] * self.obs_shape[1] * self.obs_shape[2]:
            obs = obs.reshape(-1, *self.obs_shape)
        if obs.ndim != 4 or tuple(obs.shape[1:]) != self.obs_shape:
            raise CourseError(f"observations must have shape [batch, {', '.join(map(str, self.obs_shape))}], "
                              f"got {tuple(obs.shape)}")
        return obs.float()

    def step(self, obs: Tensor, state: State | None = None) -> tuple[Tensor, Tensor, State]:
        """One environment step: N ticks of the D cells on one observation.
        Returns (logits [B, A], value [B], new state)."""
        obs = self.hook_obs(self._obs(obs))
        B = obs.shape[0]
        if state is None:
            state = self.initial_state(B, obs.device)
        self.check_state(state, B)
        enc = self.hook_enc(torch.relu(self.encoder(obs)))
        hs = list(state[0].unbind(1))
        cs = list(state[1].unbind(1))
        for n in range(self.ticks):
            for d, cell in enumerate(self.cells):
                below = hs[-1] if d == 0 else hs[d - 1]
                h, c = cell(enc, below, hs[d], cs[d])
                hs[d] = self.hook_h[d][n](h)
                cs[d] = self.hook_c[d][n](c)
        x = torch.relu(self.fc(torch.cat([hs[-1], enc], 1).flatten(1)))
        logits = self.hook_logits(self.actor(x))
        value = self.hook_value(self.critic(x).squeeze(-1))
        return logits, value, (torch.stack(hs, 1), torch.stack(cs, 1))

    def forward(self, obs: Tensor, state: State | None = None) -> Tensor:
        """Action logits [B, A] for one step from `state` (zeros if None)."""
        return self.step(obs, state)[0]


class ConvBaseline(HookedConvPolicy):
    """The feed-forward control: a HookedConvPolicy (hooks `convs.{i}.hook_post`, ...) with the
    recurrent interface (its state is empty, so extra thinking steps change nothing)."""

    def __init__(self, obs_shape: Sequence[int] = (5, 7, 7), n_actions: int = 5, channels: Sequence[int] = (32, 32),
                 hidden: Sequence[int] = (64,)):
        super().__init__(obs_shape, n_actions, channels=channels, hidden=hidden, value_head=True)

    def initial_state(self, batch: int, device=None) -> State:
        return ()

    def check_state(self, state: State, batch: int) -> None:
        if state not in ((), None):
            raise CourseError("the feed-forward baseline has no state: pass () or None")

    def step(self, obs: Tensor, state: State | None = None) -> tuple[Tensor, Tensor, State]:
        logits, value = self.forward_both(obs)
        return logits, value, ()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_baseline(drc: DRC, n_convs: int = 2, hidden: int | None = None) -> ConvBaseline:
    """The ConvBaseline with `n_convs` equal-width 3x3 convolutions whose parameter count is
    closest to the DRC's (the width is searched; the dense layer has the DRC's `hidden` units)."""
    hidden = hidden or drc.hidden
    target = n_params(drc)
    best = None
    with torch.random.fork_rng(devices=[]):
        for width in range(4, 257, 2):
            m = ConvBaseline(drc.obs_shape, drc.n_actions, (width,) * n_convs, (hidden,))
            gap = abs(n_params(m) - target)
            if best is None or gap < best[0]:
                best = (gap, width)
            elif n_params(m) > target:
                break
    return ConvBaseline(drc.obs_shape, drc.n_actions, (best[1],) * n_convs, (hidden,))


def build_agent(arch: dict) -> nn.Module:
    """A DRC or ConvBaseline from its `arch` dict (as saved in a checkpoint)."""
    arch = dict(arch)
    kind = arch.pop("kind", "drc")
    if kind == "drc":
        return DRC(**arch)
    if kind == "conv":
        return ConvBaseline(arch["obs_shape"], arch["n_actions"], tuple(arch["channels"]), tuple(arch["hidden"]))
    raise CourseError(f"unknown agent kind {kind!r}: use 'drc' or 'conv'")


def agent_arch(model: nn.Module) -> dict:
    """The dict `build_agent` rebuilds `model` from."""
    if isinstance(model, DRC):
        return {"kind": "drc", **model.arch}
    if isinstance(model, ConvBaseline):
        return {"kind": "conv", "obs_shape": list(model.obs_shape), "n_actions": model.n_actions,
                "channels": list(model.channels), "hidden": list(model.hidden)}
    raise CourseError(f"not a chapter-08 agent: {type(model).__name__}")
