"""The procgen maze and the cheese vector on the released maze agent (Langosco et al. 2022; Turner, Mini et
al. 2023, arXiv 2310.08043), owned by the course.

Install (a separate step, on this path only; never in requirements.txt):

    python -m utils.goal_misgen.procgen_maze --install        # or utils.goal_misgen.procgen_maze.ensure_procgen()

OpenAI's `procgen` 0.10.7 has wheels up to Python 3.10; `procgen-mirror` 0.10.7 (same C++ engine) has
cp311/cp312 wheels but declares numpy<2, gym<1 and gym3, which would break `pip install -r requirements.txt`.
Installed WITHOUT its dependencies, beside gym3 0.3.3 and gym 0.26.2, it runs with numpy 2. `ensure_procgen`
installs the three with `--no-deps` into `_build/pip-no-deps` (utils.pip_no_deps, shared with chapter 05's
lczerolens) and the few runtime modules they import (cffi, cloudpickle, imageio) when missing, torch held.
`procgen_available()` says whether procgen imports (adding that folder to sys.path when it is there) and
installs nothing. Measured here (Python 3.11, numpy 2.4.6, one core): the wheel is 48 MB; the install takes
about 20 s; the first env takes about 3 s to create (asset loading), later ones milliseconds; about 5k
random steps/s.

Use:

    policy = impala.load_maze_policy("model_rand_region_5.pth")       # or url=impala.RELEASED_URL
    res = cheese_vector_experiment(policy, seeds=range(100))          # numbers; format_result(res) prints them
    env = make_maze_env(seed); state = get_state(env)                 # MazeState: grid, mouse, cheese
    case = maze_case(env, seed)                                       # decision square, moves, 4 observations
    p_cheese, p_corner = decision_probs(policy, case)                 # at the decision square
    observe(env, state.with_cheese(square).with_mouse(other))         # edit, set_state, render

The agent: `utils.goal_misgen.impala.load_maze_policy(path)` with the released `model_rand_region_5.pth`,
which is NOT on the Hugging Face hub: the learner gives a local path, or `url=impala.RELEASED_URL`
(https://nerdsniper.net/mats/model_rand_region_5.pth, the file procgen-tools downloads) to download it once.
Offline, `impala.write_maze_fixture(path)` writes random weights at full shape; numbers on it mean nothing.

The maze state. procgen serializes a game with `get_state` (bytes) and restores it with `set_state`.
`MazeState.from_bytes` parses the maze's bytes (the C++ `serialize` order: the game header, the entities,
the `grid_size x grid_size` grid of cells, `maze_dim`, `world_dim`), and `to_bytes` writes them back
byte-identically. The grid is indexed [row, col] with row 0 at the BOTTOM of the rendered image (the
observation is flipped vertically relative to the array); cells are EMPTY (100), BLOCKED (51) or CHEESE
(2); the mouse is entity 0 at (x, y) = (col + 0.5, row + 0.5). Mazes of size maze_dim sit in the middle of
the 25 x 25 world, padded with walls; the mouse starts in the maze's bottom-left square and the
training-time cheese region is the top-right (Langosco et al.'s agent was trained with the cheese in the
top-right 5 x 5). `with_cheese`, `without_cheese`, `with_mouse` edit a state; `set_state` + `observe`
render it.

The decision square (pure functions on a grid, tested without procgen): mazes are trees, so the path
from the mouse's start to the cheese and the path to the top-right corner share a prefix and then part
for good; the decision square is the last square they share (None when the cheese is on the way to the
corner). At it the agent must choose: the first move of the path to the cheese, or of the path to the
corner. P(cheese | decision square) is the policy's probability of the cheese move, summed over the
procgen actions that make it (`ACTION_GROUPS`: LEFT = 0, 1, 2; DOWN = 3; UP = 5; RIGHT = 6, 7, 8; checked
here by stepping the env).

The experiment (`cheese_vector_experiment`, after Turner, Mini et al.): for each maze (level seed), the
cheese vector is the activation at `impala.RESADD_OUT` (embedder.block2.res1's residual output, 128 x 16 x
16) with the cheese minus without it, the mouse at its start square (`at="start"`, as in the source) or at
the decision square (`at="decision"`). The patch subtracts `coeff` x the vector from that activation on
every forward pass of the agent; the measurement is the decision-square observation's forward pass. The
source reports, over seeds 0-99 with a decision square, the median P(cheese | decision square) falling
from 0.81 to 0.03 (coeff 1, `SOURCE`). The same subtraction is made with three controls, each per maze:
an isotropic random vector of the same norm ("norm-matched random"), a random direction drawn from the
activations' own covariance at that site (`utils.interp.controls.variance_matched_random`) scaled to the
same norm ("variance-matched random"), and the cheese vector of ANOTHER maze (the next one in the list:
"other maze's cheese vector"). Returned: per-maze probabilities and the medians with bootstrap intervals
over mazes; never trained, nothing downloaded. In "hard" mode 52 of the level seeds 0-99 have a decision
square; the whole experiment on them takes about 20 s on one CPU core (measured on the fixture).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from utils.core import CourseError

PINS = ("procgen-mirror==0.10.7", "gym3==0.3.3", "gym==0.26.2")
PROVIDES = ("procgen", "gym3", "gym")
# modules procgen / gym3 / gym import at run time (versions tested here with numpy 2.4.6)
DEPS = {"cffi": "cffi==2.0.0", "cloudpickle": "cloudpickle==3.1.3", "imageio": "imageio==2.38.2"}
INSTALL_HINT = ("run `python -m utils.goal_misgen.procgen_maze --install` (ensure_procgen()): it installs "
                f"{' '.join(PINS)} with --no-deps into _build/pip-no-deps; never put them in requirements.txt "
                "(procgen-mirror declares numpy<2)")

EMPTY, BLOCKED, CHEESE = 100, 51, 2
WORLD_DIM = 25
ACTION_GROUPS = {"LEFT": (0, 1, 2), "DOWN": (3,), "UP": (5,), "RIGHT": (6, 7, 8), "NOOP": (4, 9, 10, 11, 12, 13, 14)}
DELTAS = {"LEFT": (0, -1), "RIGHT": (0, 1), "UP": (1, 0), "DOWN": (-1, 0)}     # (row, col); row 0 = bottom
SOURCE = {"original": 0.81, "cheese vector": 0.03}    # median P(cheese | decision square), seeds 0-99
CONDITIONS = ("original", "cheese removed", "cheese vector", "norm-matched random", "variance-matched random",
              "other maze's cheese vector")
Square = tuple[int, int]


# ------------------------------------------------------------------ install

def ensure_procgen(target=None) -> str:
    """Make `procgen` importable: procgen-mirror, gym3 and gym WITHOUT dependencies into `target`
    (default _build/pip-no-deps), their runtime modules (DEPS) when missing with torch held. Returns where
    procgen is."""
    from utils.pip_no_deps import ensure_no_deps

    return ensure_no_deps(PINS, provides=PROVIDES, hint=INSTALL_HINT, deps=DEPS, target=target)


def procgen_available() -> bool:
    """Whether procgen imports (adding _build/pip-no-deps to sys.path when procgen is in it); installs nothing."""
    if importlib.util.find_spec("procgen") is None:
        from utils.pip_no_deps import add_target, default_target

        if (default_target() / "procgen").is_dir():
            add_target()
    return importlib.util.find_spec("procgen") is not None


def import_procgen():
    if not procgen_available():
        raise CourseError(f"the procgen maze needs procgen-mirror 0.10.7: {INSTALL_HINT}")
    # imported by name: procgen is installed on demand (ensure_procgen), not pinned in requirements.txt
    return importlib.import_module("procgen")


# ------------------------------------------------------------------ the serialized state (pure)

def _fields(kind: str, names: str) -> list[tuple[str, str]]:
    return [(kind, n) for n in names.split()]


# procgen's Game::serialize, BasicAbstractGame::serialize and MazeGame::serialize, in order
# ("i" int32, "f" float32, "s" int32 length + ascii bytes)
_HEAD = (_fields("i", "SERIALIZE_VERSION") + _fields("s", "game_name")
         + _fields("i", "paint_vel_info use_generated_assets use_monochrome_assets restrict_themes use_backgrounds "
                        "center_agent debug_mode distribution_mode use_sequential_levels use_easy_jump plain_assets "
                        "physics_mode grid_step level_seed_low level_seed_high game_type game_n "
                        "level_seed_rand_gen.is_seeded")
         + _fields("s", "level_seed_rand_gen.str") + _fields("i", "rand_gen.is_seeded") + _fields("s", "rand_gen.str")
         + _fields("f", "step_data.reward")
         + _fields("i", "step_data.done step_data.level_complete action timeout current_level_seed prev_level_seed "
                        "episodes_remaining episode_done last_reward_timer")
         + _fields("f", "last_reward")
         + _fields("i", "default_action fixed_asset_seed cur_time is_waiting_for_step grid_size"))
_ENTITY = (_fields("f", "x y vx vy rx ry")
           + _fields("i", "type image_type image_theme render_z will_erase collides_with_entities")
           + _fields("f", "collision_margin rotation vrot")
           + _fields("i", "is_reflected fire_time spawn_time life_time expire_time use_abs_coords")
           + _fields("f", "friction") + _fields("i", "smart_step avoids_collisions auto_erase")
           + _fields("f", "alpha health theta grow_rate alpha_decay climber_spawn_x"))
_MIDDLE = (_fields("i", "use_procgen_background background_index") + _fields("f", "bg_tile_ratio bg_pct_x char_dim")
           + _fields("i", "last_move_action move_action special_action")
           + _fields("f", "mixrate maxspeed max_jump action_vx action_vy action_vrot center_x center_y")
           + _fields("i", "random_agent_start has_useful_vel_info step_rand_int asset_rand_gen.is_seeded")
           + _fields("s", "asset_rand_gen.str") + _fields("i", "main_width main_height out_of_bounds_object")
           + _fields("f", "unit view_dim x_off y_off visibility min_visibility") + _fields("i", "w h"))
_TAIL = _fields("i", "maze_dim world_dim END_OF_BUFFER")


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, kind: str):
        if kind == "s":
            n = self.take("i")
            if n < 0 or self.at + n > len(self.data):
                raise CourseError(f"not a procgen maze state: a string of length {n} at byte {self.at}")
            out = self.data[self.at:self.at + n].decode("ascii")
            self.at += n
            return out
        if self.at + 4 > len(self.data):
            raise CourseError(f"not a procgen maze state: it ends at byte {len(self.data)}, inside a field")
        (val,) = struct.unpack_from("<i" if kind == "i" else "<f", self.data, self.at)
        self.at += 4
        return val

    def block(self, spec) -> dict:
        return {name: self.take(kind) for kind, name in spec}


def _write(out: list, spec, values: dict) -> None:
    for kind, name in spec:
        v = values[name]
        if kind == "s":
            raw = v.encode("ascii")
            out.append(struct.pack("<i", len(raw)) + raw)
        else:
            out.append(struct.pack("<i" if kind == "i" else "<f", v))


@dataclass
class MazeState:
    """A procgen maze's serialized state, parsed: `grid` [world_dim, world_dim] (row 0 = bottom), the
    entities (entity 0 is the mouse) and every other field, so `to_bytes` writes the same bytes back."""
    head: dict
    ents: list
    middle: dict
    grid: np.ndarray
    tail: dict = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes) -> "MazeState":
        if not isinstance(data, (bytes, bytearray)):
            raise CourseError(f"a maze state is the bytes of env.callmethod('get_state')[i], got {type(data).__name__}")
        r = _Reader(bytes(data))
        head = r.block(_HEAD)
        if head["game_name"] != "maze":
            raise CourseError(f"not a maze state: the game is {head['game_name']!r} "
                              "(make the env with env_name='maze')")
        n_ents = r.take("i")
        if not 0 <= n_ents <= 10_000:
            raise CourseError(f"not a procgen maze state: {n_ents} entities")
        ents = [r.block(_ENTITY) for _ in range(n_ents)]
        middle = r.block(_MIDDLE)
        n = r.take("i")
        if n != middle["w"] * middle["h"] or r.at + 4 * n > len(r.data):
            raise CourseError(f"not a procgen maze state: a grid of {n} cells for {middle['w']} x {middle['h']}")
        cells = np.frombuffer(r.data, dtype="<i4", count=n, offset=r.at).astype(np.int64)
        r.at += 4 * n
        tail = r.block(_TAIL)
        if r.at != len(r.data) or middle["w"] != middle["h"] or tail["world_dim"] != middle["w"]:
            raise CourseError(f"not a procgen maze state: {len(r.data) - r.at} bytes left after the last field "
                              f"(world_dim {tail['world_dim']}, grid {middle['w']} x {middle['h']})")
        return cls(head, ents, middle, cells.reshape(middle["h"], middle["w"]), tail)

    def to_bytes(self) -> bytes:
        out: list = []
        _write(out, _HEAD, self.head)
        out.append(struct.pack("<i", len(self.ents)))
        for e in self.ents:
            _write(out, _ENTITY, e)
        _write(out, _MIDDLE, self.middle)
        out.append(struct.pack("<i", self.grid.size))
        out.append(np.ascontiguousarray(self.grid, dtype="<i4").tobytes())
        _write(out, _TAIL, self.tail)
        return b"".join(out)

    def copy(self) -> "MazeState":
        return copy.deepcopy(self)

    @property
    def mouse(self) -> Square:
        """The mouse's (row, col) in the world grid."""
        e = self.ents[0]
        return int(e["y"]), int(e["x"])

    @property
    def cheese(self) -> Square | None:
        return cheese_square(self.grid)

    @property
    def padding(self) -> int:
        return padding_of(self.grid)

    def inner(self) -> np.ndarray:
        return inner_grid(self.grid)

    def with_mouse(self, square: Square) -> "MazeState":
        """A copy with the mouse on `square` (world (row, col)), which must be open."""
        r, c = square
        if not (0 <= r < self.grid.shape[0] and 0 <= c < self.grid.shape[1]) or self.grid[r, c] == BLOCKED:
            raise CourseError(f"the mouse can only go on an open square of the maze, got {square}")
        s = self.copy()
        s.ents[0]["x"], s.ents[0]["y"] = float(c) + 0.5, float(r) + 0.5
        return s

    def without_cheese(self) -> "MazeState":
        s = self.copy()
        s.grid[s.grid == CHEESE] = EMPTY
        return s

    def with_cheese(self, square: Square) -> "MazeState":
        """A copy with the (only) cheese on `square` (world (row, col)), which must be open."""
        r, c = square
        if not (0 <= r < self.grid.shape[0] and 0 <= c < self.grid.shape[1]) or self.grid[r, c] == BLOCKED:
            raise CourseError(f"the cheese can only go on an open square of the maze, got {square}")
        s = self.without_cheese()
        s.grid[r, c] = CHEESE
        return s


def synthetic_state(grid: np.ndarray, mouse: Square, game_name: str = "maze") -> MazeState:
    """A MazeState around a world `grid` (square, EMPTY / BLOCKED / CHEESE cells) with the mouse on `mouse`
    and neutral values in every other field: for tests and pictures without procgen (procgen itself only
    loads states it wrote)."""
    grid = np.asarray(grid, dtype=np.int64)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1]:
        raise CourseError(f"a maze world grid is square, got shape {grid.shape}")
    head = {name: ("" if kind == "s" else 0 if kind == "i" else 0.0) for kind, name in _HEAD}
    head.update(game_name=game_name, grid_size=grid.size)
    ent = {name: (0 if kind == "i" else 0.0) for kind, name in _ENTITY}
    middle = {name: ("" if kind == "s" else 0 if kind == "i" else 0.0) for kind, name in _MIDDLE}
    middle.update(w=grid.shape[1], h=grid.shape[0])
    tail = {"maze_dim": grid.shape[0] - 2 * padding_of(grid), "world_dim": grid.shape[0], "END_OF_BUFFER": 0}
    state = MazeState(head, [ent], middle, grid.copy(), tail)
    return state.with_mouse(mouse)


# ------------------------------------------------------------------ grids and the decision square (pure)

def cheese_square(grid: np.ndarray) -> Square | None:
    where = np.argwhere(np.asarray(grid) == CHEESE)
    if len(where) > 1:
        raise CourseError(f"a maze has one cheese, this grid has {len(where)}")
    return (int(where[0][0]), int(where[0][1])) if len(where) else None


def padding_of(grid: np.ndarray) -> int:
    """How many rings of walls surround the maze in the world grid."""
    g = np.asarray(grid)
    p = 0
    while 2 * p < g.shape[0] and all((side == BLOCKED).all() for side in (g[p], g[-p - 1], g[:, p], g[:, -p - 1])):
        p += 1
    return p


def inner_grid(grid: np.ndarray) -> np.ndarray:
    """The maze inside its walls (a view of the world grid)."""
    p = padding_of(grid)
    return np.asarray(grid)[p:len(grid) - p, p:len(grid) - p]


def bfs_path(grid: np.ndarray, start: Square, goal: Square) -> list[Square] | None:
    """The shortest path (list of squares, both ends included) between two open squares, or None."""
    g = np.asarray(grid)
    prev = {tuple(start): None}
    todo = deque([tuple(start)])
    while todo:
        sq = todo.popleft()
        if sq == tuple(goal):
            path = [sq]
            while prev[path[-1]] is not None:
                path.append(prev[path[-1]])
            return path[::-1]
        for dr, dc in DELTAS.values():
            n = (sq[0] + dr, sq[1] + dc)
            if 0 <= n[0] < g.shape[0] and 0 <= n[1] < g.shape[1] and g[n] != BLOCKED and n not in prev:
                prev[n] = sq
                todo.append(n)
    return None


def move_between(a: Square, b: Square) -> str:
    """The action name (a key of DELTAS) that goes from square a to the neighbouring square b."""
    d = (b[0] - a[0], b[1] - a[1])
    for name, delta in DELTAS.items():
        if delta == d:
            return name
    raise CourseError(f"{a} and {b} are not neighbours")


def decision_square(grid: np.ndarray, start: Square | None = None) -> Square | None:
    """In an INNER grid (the maze inside its walls), the last square the paths from `start` (default the
    bottom-left, where the mouse starts) to the cheese and to the top-right corner share; None when there
    is no cheese or the paths never part (the cheese on the way to the corner, or the corner on the way
    to the cheese)."""
    g = np.asarray(grid)
    cheese = cheese_square(g)
    if cheese is None:
        return None
    start = (0, 0) if start is None else tuple(start)
    to_cheese = bfs_path(g, start, cheese)
    to_corner = bfs_path(g, start, (g.shape[0] - 1, g.shape[1] - 1))
    if to_cheese is None or to_corner is None:
        raise CourseError(f"the cheese or the top-right corner cannot be reached from {start} in this maze")
    for i, (a, b) in enumerate(zip(to_cheese, to_corner)):
        if a != b:
            return to_cheese[i - 1]
    return None


def decision_moves(grid: np.ndarray, square: Square) -> tuple[str, str]:
    """(the move towards the cheese, the move towards the top-right corner) from `square` of an INNER grid."""
    g = np.asarray(grid)
    to_cheese = bfs_path(g, square, cheese_square(g))
    to_corner = bfs_path(g, square, (g.shape[0] - 1, g.shape[1] - 1))
    if not to_cheese or len(to_cheese) < 2 or not to_corner or len(to_corner) < 2:
        raise CourseError(f"{square} is not a decision square: the cheese or the corner is on it or out of reach")
    return move_between(square, to_cheese[1]), move_between(square, to_corner[1])


def action_probs(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """{move: probability} from [batch, 15] logits, each move's procgen actions summed (ACTION_GROUPS)."""
    p = torch.softmax(logits.float(), dim=-1)
    return {name: p[:, list(idx)].sum(-1) for name, idx in ACTION_GROUPS.items()}


# ------------------------------------------------------------------ the live env

def make_maze_env(seed: int, distribution_mode: str = "hard"):
    """One procgen maze (level `seed`) as a gym3 env with one copy. procgen-tools and the source's numbers
    use distribution_mode "hard" (mazes up to 25 x 25); "easy" draws other, smaller mazes per seed."""
    procgen = import_procgen()
    if distribution_mode not in ("easy", "hard"):
        raise CourseError(f"distribution_mode is 'easy' or 'hard', got {distribution_mode!r}")
    return procgen.ProcgenGym3Env(num=1, env_name="maze", num_levels=1, start_level=int(seed),
                                  distribution_mode=distribution_mode, num_threads=0)


def get_state(env) -> MazeState:
    return MazeState.from_bytes(env.callmethod("get_state")[0])


def set_state(env, state: MazeState) -> None:
    env.callmethod("set_state", [state.to_bytes()])


def observe(env, state: MazeState | None = None) -> np.ndarray:
    """The agent's view, uint8 [64, 64, 3], of `state` (set first) or of the env as it is."""
    if state is not None:
        set_state(env, state)
    return np.asarray(env.observe()[1]["rgb"][0])


@dataclass
class MazeCase:
    """One maze with a decision square: world coordinates, the two moves and the four observations."""
    seed: int
    state: MazeState
    decision: Square
    cheese_move: str
    corner_move: str
    obs: dict            # "start", "start no cheese", "decision", "decision no cheese": uint8 [64, 64, 3]


def maze_case(env, seed: int) -> MazeCase | None:
    """The case of the env's maze (as generated, the mouse at its start), or None without a decision square."""
    state = get_state(env)
    inner = state.inner()
    pad = state.padding
    start = (state.mouse[0] - pad, state.mouse[1] - pad)
    dsq = decision_square(inner, start)
    if dsq is None:
        return None
    cheese_move, corner_move = decision_moves(inner, dsq)
    at = (dsq[0] + pad, dsq[1] + pad)
    plain = state.without_cheese()
    obs = {"start": observe(env, state), "start no cheese": observe(env, plain),
           "decision": observe(env, state.with_mouse(at)), "decision no cheese": observe(env, plain.with_mouse(at))}
    set_state(env, state)
    return MazeCase(int(seed), state, at, cheese_move, corner_move, obs)


# ------------------------------------------------------------------ the experiment

def _median_ci(x: np.ndarray, seed: int) -> tuple[float, float, float]:
    from utils.stats import bootstrap_statistic

    m = float(np.median(x))
    if len(x) < 2 or np.ptp(x) == 0:
        return m, m, m
    return bootstrap_statistic(lambda v: np.median(v, axis=-1), x, n_boot=2000, seed=seed)


@torch.no_grad()
def _forward(policy, obs: torch.Tensor, delta: torch.Tensor | None,
             batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, RESADD_OUT activations) of `obs`, with `delta` [n, 128, 16, 16] added at RESADD_OUT."""
    from utils.goal_misgen.impala import RESADD_OUT

    dev = next(policy.parameters()).device
    logits, acts = [], []
    for i in range(0, len(obs), batch_size):
        x = obs[i:i + batch_size].to(dev)
        d = None if delta is None else delta[i:i + batch_size].to(dev)
        store = {}

        def hook(a, hook):
            a = a if d is None else a + d.to(a.dtype)
            store["a"] = a.detach()
            return a
        logits.append(policy.run_with_hooks(x, fwd_hooks=[(RESADD_OUT, hook)]).float().cpu())
        acts.append(store["a"].float().cpu())
    return torch.cat(logits), torch.cat(acts)


def decision_probs(policy, case: MazeCase, delta: torch.Tensor | None = None,
                   cheese: bool = True) -> tuple[float, float]:
    """(P(cheese move), P(corner move)) of `policy` at the case's decision square, the maze with its cheese
    (or without: cheese=False), with `delta` ([128, 16, 16], e.g. minus a cheese vector) added at RESADD_OUT."""
    from utils.goal_misgen.impala import preprocess

    obs = preprocess(case.obs["decision" if cheese else "decision no cheese"])
    logits, _ = _forward(policy, obs, None if delta is None else delta.reshape(1, *delta.shape[-3:]), 1)
    probs = action_probs(logits)
    return float(probs[case.cheese_move][0]), float(probs[case.corner_move][0])


def cheese_vector_experiment(policy, seeds: Iterable[int] = range(100), coeff: float = 1.0, at: str = "start",
                             controls: bool = True, seed: int = 0, distribution_mode: str = "hard",
                             batch_size: int = 64, progress: Callable[[str], None] | None = None) -> dict:
    """Subtract each maze's cheese vector (and its controls) at RESADD_OUT and measure P(cheese | decision
    square) before and after; see the module docstring. `policy` is an `impala.ImpalaPolicy` (the released
    agent or a fixture); `seeds` are level seeds (mazes without a decision square are skipped and listed).

    Returns {"n_mazes", "seeds", "no_decision_square", "coeff", "at", "fixture", "vector_norm_median",
    "p_cheese": {condition: [per maze]}, "p_corner": {condition: [...]}, "median": {condition: (median, low,
    high)}, "median_drop": {condition: (median of original - condition, low, high)}, "source": SOURCE,
    "seconds"}, conditions in CONDITIONS order (controls=False keeps the first three). "cheese removed" is no patch: the
    decision-square observation of the maze without its cheese (with at="decision" and coeff 1, the cheese
    vector turns the activation into exactly that one, so the two agree)."""
    from utils.goal_misgen.impala import preprocess
    from utils.interp.controls import variance_matched_random

    if at not in ("start", "decision"):
        raise CourseError(f"at is 'start' (the source's cheese vector) or 'decision', got {at!r}")
    if not np.isfinite(coeff):
        raise CourseError(f"coeff must be a finite number, got {coeff}")
    t0 = time.time()
    seeds = [int(s) for s in seeds]
    cases, skipped = [], []
    env = None
    for s in seeds:
        env = make_maze_env(s, distribution_mode)
        case = maze_case(env, s)
        (skipped.append(s) if case is None else cases.append(case))
        if progress and len(cases) % 25 == 0 and case is not None:
            progress(f"{len(cases)} mazes with a decision square")
    del env
    n = len(cases)
    if n < 2:
        raise CourseError(f"{n} of the {len(seeds)} mazes have a decision square: give more seeds "
                          "(the source used 0-99)")
    stack = lambda key: preprocess(np.stack([c.obs[key] for c in cases]))   # noqa: E731
    src = "start" if at == "start" else "decision"
    _, with_cheese = _forward(policy, stack(src), None, batch_size)
    _, without = _forward(policy, stack(f"{src} no cheese"), None, batch_size)
    vec = with_cheese - without                                          # [n, 128, 16, 16]
    norms = vec.flatten(1).norm(dim=1)
    dsq_obs = stack("decision")
    logits_plain, acts_plain = _forward(policy, stack("decision no cheese"), None, batch_size)
    deltas = {"original": None, "cheese vector": -coeff * vec}
    if controls:
        g = torch.Generator().manual_seed(seed)
        iso = torch.randn(vec.shape, generator=g)
        iso = iso / iso.flatten(1).norm(dim=1)[:, None, None, None] * norms[:, None, None, None]
        _, acts_dsq = _forward(policy, dsq_obs, None, batch_size)
        pool = torch.cat([with_cheese, without, acts_dsq, acts_plain]).flatten(1)
        vm = variance_matched_random(pool, rank=n, seed=seed).T.reshape(vec.shape)       # unit directions
        vm = vm * norms[:, None, None, None]
        deltas.update({"norm-matched random": -coeff * iso, "variance-matched random": -coeff * vm,
                       "other maze's cheese vector": -coeff * torch.roll(vec, shifts=-1, dims=0)})
    p_cheese, p_corner = {}, {}

    def record(name, logits):
        probs = action_probs(logits)
        p_cheese[name] = [float(probs[c.cheese_move][i]) for i, c in enumerate(cases)]
        p_corner[name] = [float(probs[c.corner_move][i]) for i, c in enumerate(cases)]
    for name, delta in deltas.items():
        record(name, _forward(policy, dsq_obs, delta, batch_size)[0])
        if name == "original":
            record("cheese removed", logits_plain)       # the cheese taken out of the maze: the reference
    orig = np.array(p_cheese["original"])
    return {"n_mazes": n, "seeds": [c.seed for c in cases], "no_decision_square": skipped, "coeff": float(coeff),
            "at": at, "fixture": bool(getattr(policy, "fixture", False)),
            "vector_norm_median": float(norms.median()),
            "p_cheese": p_cheese, "p_corner": p_corner,
            "median": {k: _median_ci(np.array(v), seed) for k, v in p_cheese.items()},
            "median_drop": {k: _median_ci(orig - np.array(v), seed) for k, v in p_cheese.items() if k != "original"},
            "source": dict(SOURCE), "seconds": round(time.time() - t0, 2)}


def format_result(res: dict) -> str:
    """The experiment's table, one line per condition."""
    lines = [f"{res['n_mazes']} mazes with a decision square ({len(res['no_decision_square'])} without); "
             f"cheese vector at the {res['at']} square, coeff {res['coeff']:g}"
             + (" -- RANDOM-WEIGHT FIXTURE, numbers mean nothing" if res["fixture"] else "")]
    for k, (m, lo, hi) in res["median"].items():
        src = f"   (source: {SOURCE[k]:.2f})" if k in SOURCE else ""
        lines.append(f"  median P(cheese | decision square), {k:28s} {m:.3f} [{lo:.3f}, {hi:.3f}]{src}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m utils.goal_misgen.procgen_maze",
                                description="procgen maze for chapter 06's released-agent section")
    p.add_argument("--install", action="store_true", help="install procgen-mirror, gym3, gym --no-deps (see docstring)")
    p.add_argument("--policy", help="model_rand_region_5.pth (a local path); runs the cheese-vector experiment")
    p.add_argument("--seeds", type=int, default=100, help="level seeds 0..N-1 (default 100, as in the source)")
    args = p.parse_args(argv)
    if args.install:
        t0 = time.time()
        where = ensure_procgen()
        print(f"procgen importable from {where} ({time.time() - t0:.1f} s)")
    if args.policy:
        from utils.goal_misgen.impala import load_maze_policy

        torch.set_num_threads(max(1, torch.get_num_threads()))
        res = cheese_vector_experiment(load_maze_policy(args.policy), seeds=range(args.seeds), progress=print)
        print(format_result(res))
    if not (args.install or args.policy):
        p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
