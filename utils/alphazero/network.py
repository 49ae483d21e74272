"""A small residual policy-value network, hookable with TransformerLens `HookPoint`s.

Input [B, 2, rows, cols] (own stones, opponent's stones; `Game.encode`). A 3x3 convolution
stem, `n_blocks` residual blocks (conv-ReLU-conv, add, ReLU), then AlphaZero's two heads: a
policy head (1x1 conv to 2 planes, linear to the action logits) and a value head (1x1 conv to
1 plane, a hidden layer, tanh). No batch norm: the network is evaluated one small batch at a
time inside the search, and a network without running statistics behaves the same in both.

Hook names: `hook_input`, `hook_stem` (after the stem's ReLU), `blocks.{i}.hook_mid` (inside
block i, after its first ReLU), `blocks.{i}.hook_resid` (block i's output, after the ReLU:
non-negative, ready for NMF), `hook_policy` (logits [B, n_actions]) and `hook_value` ([B]).
`LAYERS(net)` lists the stem and block outputs: the "where" axis of the probes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.alphazero.games import Game, get_game
from utils.core import CourseError, check_fields


@dataclass
class NetConfig:
    game: str = "tictactoe"
    channels: int = 32
    n_blocks: int = 2
    value_hidden: int = 32

    def __post_init__(self):
        get_game(self.game)
        check_fields(self, positive_int=("channels", "n_blocks", "value_hidden"))


class _Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.hook_mid = HookPoint()
        self.hook_resid = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        h = self.hook_mid(torch.relu(self.conv1(x)))
        return self.hook_resid(torch.relu(x + self.conv2(h)))


class AZNet(HookedRootModule):
    """Policy-value network for `cfg.game`; forward(x) -> (logits [B, n_actions], value [B])."""

    def __init__(self, cfg: NetConfig | None = None, **kw):
        super().__init__()
        self.cfg = cfg if cfg is not None else NetConfig(**kw)
        self.game: Game = get_game(self.cfg.game)
        c, (r, k) = self.cfg.channels, self.game.shape
        self.hook_input = HookPoint()
        self.stem = nn.Conv2d(2, c, 3, padding=1)
        self.hook_stem = HookPoint()
        self.blocks = nn.ModuleList([_Block(c) for _ in range(self.cfg.n_blocks)])
        self.policy_conv = nn.Conv2d(c, 2, 1)
        self.policy_fc = nn.Linear(2 * r * k, self.game.n_actions)
        self.value_conv = nn.Conv2d(c, 1, 1)
        self.value_fc1 = nn.Linear(r * k, self.cfg.value_hidden)
        self.value_fc2 = nn.Linear(self.cfg.value_hidden, 1)
        self.hook_policy = HookPoint()
        self.hook_value = HookPoint()
        self.setup()

    def forward(self, x) -> tuple[Tensor, Tensor]:
        x = self._input(x)
        h = self.hook_stem(torch.relu(self.stem(self.hook_input(x))))
        for blk in self.blocks:
            h = blk(h)
        p = torch.relu(self.policy_conv(h)).flatten(1)
        logits = self.hook_policy(self.policy_fc(p))
        v = torch.relu(self.value_conv(h)).flatten(1)
        value = self.hook_value(torch.tanh(self.value_fc2(torch.relu(self.value_fc1(v)))).squeeze(-1))
        return logits, value

    def _input(self, x) -> Tensor:
        if isinstance(x, np.ndarray) or (isinstance(x, Tensor) and x.ndim == 3):
            x = self.game.encode(self.game.check_boards(x))
        if not isinstance(x, Tensor) or tuple(x.shape[1:]) != (2, *self.game.shape):
            got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise CourseError(f"{self.game.name} network input must be boards [B, {self.game.rows}, {self.game.cols}] "
                              f"or planes [B, 2, {self.game.rows}, {self.game.cols}], got {got}")
        return x.float()

    @torch.no_grad()
    def evaluate(self, boards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(priors [B, n_actions] over legal moves, values [B]) for canonical boards, as numpy."""
        logits, value = self(self.game.encode(boards))
        mask = torch.from_numpy(self.game.legal_mask(boards))
        logits = logits.masked_fill(~mask, -1e9)
        return torch.softmax(logits, -1).numpy().astype(np.float64), value.numpy().astype(np.float64)


def layer_names(net: AZNet) -> list[str]:
    """The stem and every block's output: the layers probed and decomposed."""
    return ["hook_stem"] + [f"blocks.{i}.hook_resid" for i in range(len(net.blocks))]


def net_state(net: AZNet, half: bool = False) -> dict:
    """A checkpoint: config and weights (optionally float16, to ship small files)."""
    sd = {k: (v.half() if half else v.clone()) for k, v in net.state_dict().items()}
    return {"config": asdict(net.cfg), "state_dict": sd}


def load_net(state: dict, game: str | None = None) -> AZNet:
    """A network from `net_state(...)`; a checkpoint of another game is a one-line CourseError."""
    if not isinstance(state, dict) or "config" not in state or "state_dict" not in state:
        raise CourseError("not an AlphaZero checkpoint: expected a dict with 'config' and 'state_dict' (net_state)")
    cfg = NetConfig(**state["config"])
    if game is not None and cfg.game != get_game(game).name:
        raise CourseError(f"this checkpoint is a {cfg.game} network, not {game}: load the {game} checkpoints")
    net = AZNet(cfg)
    net.load_state_dict({k: v.float() for k, v in state["state_dict"].items()})
    return net.eval()
