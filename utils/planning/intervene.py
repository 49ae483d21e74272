"""Intervening on the decoded plan: steer the agent by adding a probe direction at a square, and
ablate the plan subspace, each against a random direction (or subspace) of the same size.

Steering (after Bush et al. 2025): at the first step of a level, add `scale` times the unit
probe direction "the agent will leave this square moving d" to the hidden state of one layer at
the agent's square, at every tick. Success: the greedy first action becomes d, for a d that is a
legal move and not the action the agent took unedited. Control: a random unit direction of the
same norm at the same square.

Ablation: project the span of the probe's direction vectors out of a layer's hidden state at
every square and tick for a whole episode, and measure the solve rate; control: a random
subspace of the same dimension.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from utils.core import CourseError
from utils.envs.sokoban import MOVES, LevelBank, Sokoban
from utils.planning.play import Play, play


def _layer_hooks(model: nn.Module, layer: int) -> list[str]:
    if not hasattr(model, "hook_name"):
        raise CourseError(f"{type(model).__name__} has no per-tick hidden state: steering needs a DRC")
    return [model.hook_name("h", layer, n) for n in range(model.ticks)]


def square_edit_hook(vectors: Tensor, squares: np.ndarray):
    """A hook adding vectors [B, C] to activations [B, C, H, W] at squares [B, 2] (row, col)."""
    squares = np.asarray(squares)
    if vectors.ndim != 2 or squares.shape != (vectors.shape[0], 2):
        raise CourseError(f"square edit needs vectors [B, C] and squares [B, 2], got {tuple(vectors.shape)} and {squares.shape}")
    rows = torch.arange(vectors.shape[0])
    r, c = torch.as_tensor(squares[:, 0]), torch.as_tensor(squares[:, 1])

    def hook(act: Tensor, hook) -> Tensor:
        if act.ndim != 4 or act.shape[0] != vectors.shape[0] or act.shape[1] != vectors.shape[1]:
            raise CourseError(f"hidden state of shape {tuple(act.shape)} does not match the edit vectors "
                              f"{tuple(vectors.shape)}: edit [B, C, H, W] states with [B, C] vectors")
        act = act.clone()
        act[rows, :, r, c] += vectors.to(act.dtype)
        return act

    return hook


@torch.no_grad()
def steer_first_move(model: nn.Module, bank: LevelBank, directions: Tensor, layer: int, scale: float,
                     levels=None, seed: int = 0) -> dict[str, np.ndarray]:
    """Per level: the target direction (1-4, a legal move other than the unedited first action),
    whether the edited greedy first action hit it with the probe direction (`probe`) and with a
    random direction of the same norm (`random`). `directions` [4, C]: unit vectors for classes
    1-4 (up, down, left, right)."""
    if directions.ndim != 2 or directions.shape[0] != 4 or directions.shape[1] != model.channels:
        raise CourseError(f"directions must be [4, {model.channels}] (one per move), got {tuple(directions.shape)}")
    names = _layer_hooks(model, layer)
    env, obs, target, rng = _pick_targets(model, bank, levels, 1, 1, seed)   # a legal first move
    n = len(target)
    target = target - 1                                                     # 0-3, -1 when none
    ok = target >= 0
    vec = directions[np.maximum(target, 0)] * scale
    rand = torch.from_numpy(rng.standard_normal((n, model.channels))).float()
    rand = rand / rand.norm(dim=1, keepdim=True) * scale
    out = {"target": target + 1, "valid": ok}
    for what, v in (("probe", vec), ("random", rand)):
        hook = square_edit_hook(v, env.agent.copy())
        with model.hooks(fwd_hooks=[(nm, hook) for nm in names]):
            a = model(obs).argmax(-1).numpy()
        out[what] = (a == target) & ok
    return out


def projection_hook(basis: Tensor):
    """A hook removing the span of `basis` [k, C] from activations [B, C, H, W] at every square."""
    q, _ = torch.linalg.qr(basis.T.double())     # [C, k] orthonormal
    q = q.float()

    def hook(act: Tensor, hook) -> Tensor:
        if act.ndim != 4 or act.shape[1] != q.shape[0]:
            raise CourseError(f"hidden state of shape {tuple(act.shape)} does not have {q.shape[0]} channels in dim 1")
        coef = torch.einsum("bchw,ck->bkhw", act, q)
        return act - torch.einsum("bkhw,ck->bchw", coef, q)

    return hook


def ablate_subspace(model: nn.Module, bank: LevelBank, basis: Tensor, layer: int, levels=None,
                    max_steps: int = 40, greedy: bool = True, seed: int = 0) -> Play:
    """Play with the span of `basis` [k, C] projected out of layer `layer` at every tick and square."""
    if basis.ndim != 2 or basis.shape[1] != model.channels or basis.shape[0] >= model.channels:
        raise CourseError(f"basis must be [k, {model.channels}] with k < {model.channels}, got {tuple(basis.shape)}")
    hook = projection_hook(basis)
    return play(model, bank, levels, max_steps=max_steps, greedy=greedy, seed=seed,
                fwd_hooks=[(nm, hook) for nm in _layer_hooks(model, layer)])


def random_basis(k: int, channels: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, channels, generator=g)


# ------------------------------------------------------------------ steering away from the agent
def path_squares(agent: np.ndarray, walls: np.ndarray, targets: np.ndarray, start: int = 1,
                 length: int = 3) -> list[list[tuple[int, int]]]:
    """Per level i, the squares agent[i] + k * move(targets[i]) for k = start .. length (targets
    1-4: up, down, left, right), cut at the first wall on the way out from the agent (k = 1, 2, ...):
    the straight route a plan "leave each square moving d" would draw. Empty where the first
    square is a wall or the route ends before `start`, or where targets[i] is not 1-4."""
    agent, walls, targets = np.asarray(agent), np.asarray(walls), np.asarray(targets)
    if agent.ndim != 2 or agent.shape[1] != 2 or walls.ndim != 3 or len(walls) != len(agent) or len(targets) != len(agent):
        raise CourseError(f"path_squares needs agent [n, 2], walls [n, H, W] and targets [n], got {agent.shape}, "
                          f"{walls.shape} and {targets.shape}")
    if not (1 <= start <= length):
        raise CourseError(f"need 1 <= start <= length (squares away from the agent), got start={start}, length={length}")
    H, W = walls.shape[1:]
    out = []
    for i in range(len(agent)):
        sq = []
        if 1 <= targets[i] <= 4:
            dr, dc = MOVES[int(targets[i]) - 1]
            for k in range(1, length + 1):
                r, c = int(agent[i, 0] + k * dr), int(agent[i, 1] + k * dc)
                if not (0 <= r < H and 0 <= c < W) or walls[i, r, c]:
                    break
                if k >= start:
                    sq.append((r, c))
        out.append(sq)
    return out


def _pick_targets(model: nn.Module, bank: LevelBank, levels, start: int, length: int, seed: int):
    """(env, obs, targets [n], rng): the rooms `levels` started in one env, and per room a move d
    (1-4) other than the unedited greedy first action whose straight route has a square at
    distance >= `start` (`path_squares`; start = length = 1: the first square is not a wall),
    drawn with `rng` seeded by `seed` (returned, to draw the controls next); 0 where none."""
    levels = np.arange(len(bank)) if levels is None else np.asarray(levels).reshape(-1)
    env = Sokoban(len(levels), bank, auto_reset=False)
    obs = env.set_levels(levels)
    base = model(obs).argmax(-1).numpy()
    rng = np.random.default_rng(seed)
    target = np.zeros(len(levels), int)
    for i in range(len(levels)):
        legal = [a + 1 for a in range(4) if a != base[i]
                 and path_squares(env.agent[i:i + 1], env.walls[i:i + 1], np.array([a + 1]), start, length)[0]]
        target[i] = rng.choice(legal) if legal else 0
    return env, obs, target, rng


@torch.no_grad()
def steer_path(model: nn.Module, bank: LevelBank, directions: Tensor, layer: int, scale: float, targets,
               start: int = 1, length: int = 3, levels=None) -> Tensor:
    """The first-step logits [n, A] of `levels` (zero state) with `scale * directions[targets[i] - 1]`
    added to the hidden state of `layer` at every tick, at the squares of `path_squares(agent,
    walls, targets, start, length)` of level i (none where its path is empty). directions [4, C]:
    one vector per move (up, down, left, right)."""
    if directions.ndim != 2 or directions.shape[0] != 4 or directions.shape[1] != model.channels:
        raise CourseError(f"directions must be [4, {model.channels}] (one per move), got {tuple(directions.shape)}")
    names = _layer_hooks(model, layer)
    levels = np.arange(len(bank)) if levels is None else np.asarray(levels).reshape(-1)
    targets = np.asarray(targets).reshape(-1)
    if len(targets) != len(levels):
        raise CourseError(f"one target per level: got {len(targets)} targets for {len(levels)} levels")
    env = Sokoban(len(levels), bank, auto_reset=False)
    obs = env.set_levels(levels)
    squares = path_squares(env.agent, env.walls, targets, start, length)
    delta = torch.zeros(len(levels), model.channels, bank.size, bank.size)
    for i, sq in enumerate(squares):
        for r, c in sq:
            delta[i, :, r, c] += directions[int(targets[i]) - 1].float() * scale

    def hook(act: Tensor, hook) -> Tensor:
        return act + delta.to(act.dtype)

    with model.hooks(fwd_hooks=[(nm, hook) for nm in names]):
        logits, _, _ = model.step(obs, model.initial_state(len(levels)))
    return logits


DECOY = (1, 2, 3, 0)   # the decoy content for move d (0-3): the next move's direction, up->down->left->right->up


@torch.no_grad()
def steer_away(model: nn.Module, bank: LevelBank, directions: Tensor, layer: int, scale: float,
               controls: dict[str, Tensor] | None = None, start: int = 1, length: int = 3, levels=None,
               seed: int = 0) -> dict[str, np.ndarray]:
    """Route steering away from the agent (after Bush et al. 2025). Per level: a target move d (a
    legal move other than the unedited greedy first action, drawn with `seed`) whose straight
    route has squares at distance >= `start`; the plan "leave this square moving d" is written on
    those squares (`steer_path`), never on the agent's own square. Returns {'target' [n] (1-4, 0
    when no route), 'valid' [n], and for the probe `directions` ('probe'), each control in
    `controls` ({name: [4, C] directions}, used the same way at the same squares) and 'isotropic'
    (random unit directions, the floor): `name` [n] (the first move became d) and `name_decoy` [n]
    (the first move became d when the route carries ANOTHER move's direction, `DECOY`: the same
    squares and norm, different content). `name - name_decoy` is the specific effect of writing
    d: about zero for random directions by symmetry, whatever their disruption does."""
    levels = np.arange(len(bank)) if levels is None else np.asarray(levels).reshape(-1)
    _, _, target, rng = _pick_targets(model, bank, levels, start, length, seed)
    valid = target > 0
    out = {"target": target, "valid": valid}
    iso = torch.from_numpy(rng.standard_normal((4, model.channels))).float()
    iso = iso / iso.norm(dim=1, keepdim=True)
    for name, dirs in [("probe", directions), *(controls or {}).items(), ("isotropic", iso)]:
        for suffix, content in (("", dirs), ("_decoy", dirs[list(DECOY)])):
            logits = steer_path(model, bank, content, layer, scale, target, start, length, levels)
            out[name + suffix] = (logits.argmax(-1).numpy() == target - 1) & valid
    return out
