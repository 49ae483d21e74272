"""Monte Carlo tree search with PUCT, AlphaZero's way, two implementations.

`batched_mcts` searches B games at once: every tree is stored in arrays [B, nodes, actions],
selection runs for all B trees together (numpy), and each round sends every tree's new leaf
to the network in ONE call. With `leaves_per_call = K > 1` it also gathers K leaves per tree
before calling the network (*virtual batching*): each selected path gets a virtual loss, so the
next selection in the same round tends to go elsewhere; a path that runs into a leaf already
waiting for its evaluation is dropped (a collision) and its virtual loss undone.

`simple_mcts` is the straightforward one-game, one-leaf-per-network-call version (recursive,
Python objects): the reference the benchmark compares against, and the easiest to read.

Conventions, shared by both. Values are from the point of view of the side to move at the
node they belong to. An edge (s, a) keeps N(s, a) visits and W(s, a), the sum of the values
backed up through it for the player who moves at s. Selection maximises
    Q(s, a) + c_puct * P(s, a) * sqrt(1 + sum_b N(s, b)) / (1 + N(s, a)),   Q = W / N (0 if N = 0)
over legal moves. Backup walks the path from the leaf to the root, negating the value at
every step (the players alternate). At the root, priors are mixed with Dirichlet noise,
(1 - eps) * P + eps * Dir(alpha) over the legal moves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from utils.alphazero.games import Game
from utils.core import CourseError, check_fields

Evaluator = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]   # boards -> (priors [n, A], values [n])


@dataclass
class MCTSConfig:
    n_sims: int = 32
    c_puct: float = 1.5
    dirichlet_alpha: float = 0.5
    noise_frac: float = 0.25
    leaves_per_call: int = 1
    virtual_loss: float = 1.0

    def __post_init__(self):
        check_fields(self, positive_int=("n_sims", "leaves_per_call"), positive=("c_puct", "dirichlet_alpha"),
                     unit=("noise_frac",), nonneg=("virtual_loss",))


# ------------------------------------------------------------------ the three pieces (exercises)
def puct_scores(N: np.ndarray, W: np.ndarray, P: np.ndarray, legal: np.ndarray, c_puct: float) -> np.ndarray:
    """PUCT score of every action [..., A]; -inf for illegal actions."""
    Q = np.divide(W, N, out=np.zeros_like(W, dtype=np.float64), where=N > 0)
    U = c_puct * P * np.sqrt(1.0 + N.sum(-1, keepdims=True)) / (1.0 + N)
    return np.where(legal, Q + U, -np.inf)


def backup(N: np.ndarray, W: np.ndarray, path: list[tuple[int, int]], leaf_value: float) -> None:
    """In place: add one visit and the value to every edge (node, action) of `path` (root first).
    `leaf_value` is for the side to move at the leaf; the edge into the leaf belongs to the other
    player, so it gets -leaf_value, the edge above it +leaf_value, and so on."""
    v = -float(leaf_value)
    for node, action in reversed(path):
        N[node, action] += 1
        W[node, action] += v
        v = -v


def add_dirichlet_noise(priors: np.ndarray, legal: np.ndarray, alpha: float, frac: float,
                        rng: np.random.Generator) -> np.ndarray:
    """(1 - frac) * priors + frac * noise, the noise Dirichlet(alpha) over each row's legal moves
    (zero on illegal ones); rows of priors [B, A] and legal [B, A]. Does not modify priors."""
    noise = np.zeros_like(priors, dtype=np.float64)
    for i in range(len(priors)):
        idx = np.flatnonzero(legal[i])
        if len(idx):
            noise[i, idx] = rng.dirichlet(np.full(len(idx), alpha))
    return (1 - frac) * priors + frac * noise


# ------------------------------------------------------------------ batched search
def _check_roots(game: Game, boards: np.ndarray) -> np.ndarray:
    boards = game.check_boards(boards)
    if game.finished(boards).any():
        raise CourseError("a root board is a finished game: search only positions with a legal move")
    return boards


def batched_mcts(evaluator: Evaluator, game: Game, boards, cfg: MCTSConfig, rng: np.random.Generator | None = None,
                 add_noise: bool = False, return_tree: bool = False, score_fn=None, backup_fn=None):
    """Search every root board [B, rows, cols] with `cfg.n_sims` simulations each.
    Returns the root visit counts [B, A] (and the tree arrays with `return_tree`).
    `score_fn` (like `puct_scores`) and `backup_fn` (like `backup`) replace the built-in pieces,
    so a search can run on your own implementations."""
    score_fn = score_fn or puct_scores
    boards = _check_roots(game, boards)
    rng = rng if rng is not None else np.random.default_rng(0)
    B, A, K = len(boards), game.n_actions, cfg.leaves_per_call
    M = cfg.n_sims + K + 1
    N = np.zeros((B, M, A))
    W = np.zeros((B, M, A))
    P = np.zeros((B, M, A))
    legal = np.zeros((B, M, A), dtype=bool)
    child = np.full((B, M, A), -1, dtype=np.int64)
    node_board = np.zeros((B, M, *game.shape), dtype=np.int8)
    term = np.zeros((B, M), dtype=bool)
    tval = np.zeros((B, M))
    expanded = np.zeros((B, M), dtype=bool)
    n_nodes = np.ones(B, dtype=np.int64)
    ar = np.arange(B)

    node_board[:, 0] = boards
    pri, _ = evaluator(boards)
    legal[:, 0] = game.legal_mask(boards)
    P[:, 0] = add_dirichlet_noise(pri, legal[:, 0], cfg.dirichlet_alpha, cfg.noise_frac, rng) if add_noise else pri
    expanded[:, 0] = True

    sims = np.zeros(B, dtype=np.int64)
    while (sims < cfg.n_sims).any():
        paths, leaves = [], []          # per selection: (nodes [D, B], actions [D, B]), leaf [B] (-1: none)
        for _ in range(K):
            want = sims < cfg.n_sims
            if not want.any():
                break
            sims += want
            nodes_d, acts_d = [], []
            node = np.zeros(B, dtype=np.int64)
            leaf = np.full(B, -1, dtype=np.int64)
            live = want.copy()
            while live.any():
                g = np.flatnonzero(live)
                sc = score_fn(N[g, node[g]], W[g, node[g]], P[g, node[g]], legal[g, node[g]], cfg.c_puct)
                a = sc.argmax(-1)
                nd = np.full(B, -1, dtype=np.int64)
                ac = np.full(B, -1, dtype=np.int64)
                nd[g], ac[g] = node[g], a
                nodes_d.append(nd)
                acts_d.append(ac)
                N[g, node[g], a] += cfg.virtual_loss          # virtual loss: undone before the backup
                W[g, node[g], a] -= cfg.virtual_loss
                ch = child[g, node[g], a]
                new = ch < 0
                if new.any():                                  # create the child now, evaluate it later
                    gn = g[new]
                    idx = n_nodes[gn]
                    nb, t, v = game.step(node_board[gn, node[gn]], a[new])
                    node_board[gn, idx], term[gn, idx], tval[gn, idx] = nb, t, v
                    child[gn, node[gn], a[new]] = idx
                    n_nodes[gn] += 1
                    leaf[gn] = idx
                    live[gn] = False
                old = g[~new]
                och = ch[~new]
                stop = term[old, och] | ~expanded[old, och]    # a terminal node, or a leaf still waiting (collision)
                leaf[old[stop]] = np.where(term[old[stop], och[stop]], och[stop], -2)
                live[old[stop]] = False
                cont = old[~stop]
                node[cont] = och[~stop]
            paths.append((np.array(nodes_d), np.array(acts_d)))
            leaves.append(leaf)
        # one network call for every new non-terminal leaf of this round
        todo = [(j, b, leaves[j][b]) for j in range(len(leaves)) for b in range(B)
                if leaves[j][b] >= 0 and not term[b, leaves[j][b]] and not expanded[b, leaves[j][b]]]
        values = {}
        if todo:
            bs = np.array([t[1] for t in todo])
            ls = np.array([t[2] for t in todo])
            pri, val = evaluator(node_board[bs, ls])
            P[bs, ls] = pri
            legal[bs, ls] = game.legal_mask(node_board[bs, ls])
            expanded[bs, ls] = True
            for (j, b, _), v in zip(todo, val):
                values[(j, b)] = float(v)
        for j, ((nodes_d, acts_d), leaf) in enumerate(zip(paths, leaves)):
            depth = (nodes_d >= 0).sum(0)                       # path length per game
            for d in range(len(nodes_d)):
                g = np.flatnonzero(nodes_d[d] >= 0)
                N[g, nodes_d[d, g], acts_d[d, g]] -= cfg.virtual_loss
                W[g, nodes_d[d, g], acts_d[d, g]] += cfg.virtual_loss
            v = np.array([tval[b, leaf[b]] if leaf[b] >= 0 and term[b, leaf[b]] else values.get((j, b), 0.0)
                          for b in range(B)])
            ok = leaf >= 0                                      # -1: no simulation, -2: a collision (no backup)
            if backup_fn is not None:                           # the readable path: one game at a time
                for b in np.flatnonzero(ok):
                    backup_fn(N[b], W[b], [(int(nodes_d[d, b]), int(acts_d[d, b])) for d in range(depth[b])], v[b])
                continue
            for d in range(len(nodes_d)):                       # the same backup, all games at once
                g = np.flatnonzero(ok & (nodes_d[d] >= 0))
                sign = np.where((depth[g] - 1 - d) % 2 == 0, -1.0, 1.0)
                N[g, nodes_d[d, g], acts_d[d, g]] += 1
                W[g, nodes_d[d, g], acts_d[d, g]] += sign * v[g]
    visits = N[:, 0].copy()
    if return_tree:
        return visits, dict(N=N, W=W, P=P, child=child, boards=node_board, n_nodes=n_nodes)
    return visits


# ------------------------------------------------------------------ one game at a time
class _Node:
    __slots__ = ("board", "terminal", "value", "P", "legal", "N", "W", "children")

    def __init__(self, board, terminal, value):
        self.board, self.terminal, self.value = board, terminal, value
        self.P = self.legal = self.N = self.W = None
        self.children: dict[int, _Node] = {}


def simple_mcts(evaluator: Evaluator, game: Game, board, cfg: MCTSConfig, rng: np.random.Generator | None = None,
                add_noise: bool = False) -> np.ndarray:
    """Root visit counts [A] for ONE board: one leaf per network call, nodes as Python objects."""
    board = _check_roots(game, board)[0]
    rng = rng if rng is not None else np.random.default_rng(0)
    root = _Node(board, False, 0.0)

    def expand(node: _Node) -> float:
        pri, val = evaluator(node.board[None])
        node.legal = game.legal_mask(node.board[None])[0]
        node.P, node.N, node.W = pri[0], np.zeros(game.n_actions), np.zeros(game.n_actions)
        return float(val[0])

    expand(root)
    if add_noise:
        root.P = add_dirichlet_noise(root.P[None], root.legal[None], cfg.dirichlet_alpha, cfg.noise_frac, rng)[0]

    def simulate(node: _Node) -> float:
        """Value of `node` for its side to move, after one simulation through it."""
        a = int(puct_scores(node.N, node.W, node.P, node.legal, cfg.c_puct).argmax())
        if a not in node.children:
            nb, t, v = game.step(node.board[None], [a])
            ch = node.children[a] = _Node(nb[0], bool(t[0]), float(v[0]))
            leaf_v = ch.value if ch.terminal else expand(ch)
        else:
            ch = node.children[a]
            leaf_v = ch.value if ch.terminal else simulate(ch)
        node.N[a] += 1
        node.W[a] += -leaf_v
        return -leaf_v

    for _ in range(cfg.n_sims):
        simulate(root)
    return root.N.copy()


def uniform_evaluator(game: Game) -> Evaluator:
    """Priors uniform over legal moves and value 0: search with no network (a control)."""
    def ev(boards):
        m = game.legal_mask(boards).astype(np.float64)
        return m / np.maximum(m.sum(1, keepdims=True), 1), np.zeros(len(boards))
    return ev


def visit_policy(visits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Visit counts [B, A] -> a distribution per row: N^(1/T) normalised; T = 0 puts all mass on the most visited."""
    visits = np.asarray(visits, dtype=np.float64)
    if temperature == 0:
        out = (visits == visits.max(-1, keepdims=True)).astype(np.float64)
    else:
        out = visits ** (1.0 / temperature)
    s = out.sum(-1, keepdims=True)
    if (s <= 0).any():
        raise CourseError("a row of visit counts is all zero: run at least one simulation")
    return out / s


__all__ = ["MCTSConfig", "add_dirichlet_noise", "backup", "batched_mcts", "puct_scores", "simple_mcts",
           "uniform_evaluator", "visit_policy", "math"]
