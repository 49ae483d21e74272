"""What the network knows: concepts in code, probes over layers and training, NMF, ablation,
the trace of one feature, and the network's policy against the search's.

Concepts (McGrath et al. 2022, at our scale), each a function of canonical boards [B, r, c]
(+1 = the side to move) returning int labels [B]:
- `win_in_1`: the side to move has a move that wins at once;
- `opp_threat`: the opponent would win at once if it were its turn (a "must block" square);
- `double_threat`: the side to move has two or more different winning moves;
- `centre`: the side to move has more stones in the centre (column or cell) than the opponent;
- `open_lines`: the side to move has more open lines (lines with >= 2 own stones and none of
  the opponent's) than the opponent: a material-like count;
- `solver_value`: the exact value for the side to move, 0 loss, 1 draw, 2 win.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from utils.alphazero.games import Game
from utils.alphazero.mcts import MCTSConfig, batched_mcts
from utils.alphazero.network import AZNet, layer_names
from utils.core import CourseError, torch_threads
from utils.interp.hooks import cache_activations, check_names
from utils.interp.probes import train_probe

CONCEPTS = ("win_in_1", "opp_threat", "double_threat", "centre", "open_lines", "solver_value")


def winning_moves(game: Game, boards: np.ndarray, player: int = 1) -> np.ndarray:
    """[B, A] bool: the moves that complete a line for `player` (+1 the side to move, -1 the
    opponent, as if it were the opponent's turn), on boards whose game is not over."""
    boards = game.check_boards(boards)
    b = boards * player                      # the player's stones become +1
    out = np.zeros((len(boards), game.n_actions), dtype=bool)
    live = ~game.finished(boards)
    mask = game.legal_mask(b) & live[:, None]
    for a in range(game.n_actions):
        rows = np.flatnonzero(mask[:, a])
        if len(rows):
            nxt, _, val = game.step(b[rows], np.full(len(rows), a))
            out[rows, a] = val < 0           # the mover (the player) completed a line
    return out


def open_lines(game: Game, boards: np.ndarray, player: int = 1) -> np.ndarray:
    """[B] number of lines with at least 2 of `player`'s stones and none of the other's."""
    flat = boards.reshape(len(boards), -1)[:, game.lines] * player
    return (((flat == 1).sum(-1) >= 2) & ((flat == -1).sum(-1) == 0)).sum(-1)


def concept_labels(game: Game, boards, name: str) -> np.ndarray:
    """Int labels [B] of concept `name` (see CONCEPTS) for canonical boards [B, r, c]."""
    if name not in CONCEPTS:
        raise CourseError(f"unknown concept {name!r}: use one of {', '.join(CONCEPTS)}")
    boards = game.check_boards(boards)
    if name == "win_in_1":
        return winning_moves(game, boards, 1).any(1).astype(np.int64)
    if name == "opp_threat":
        return winning_moves(game, boards, -1).any(1).astype(np.int64)
    if name == "double_threat":
        return (winning_moves(game, boards, 1).sum(1) >= 2).astype(np.int64)
    if name == "centre":
        flat = boards.reshape(len(boards), -1)[:, list(game.centre)]
        return ((flat == 1).sum(1) > (flat == -1).sum(1)).astype(np.int64)
    if name == "open_lines":
        return (open_lines(game, boards, 1) > open_lines(game, boards, -1)).astype(np.int64)
    return (game.solver_value(boards) + 1).astype(np.int64)


def all_concepts(game: Game, boards, names: Sequence[str] = CONCEPTS, solver_values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    out = {}
    for n in names:
        if n == "solver_value" and solver_values is not None:
            out[n] = (np.asarray(solver_values) + 1).astype(np.int64)
        else:
            out[n] = concept_labels(game, boards, n)
    return out


# ------------------------------------------------------------------ probes: what, when, where
def layer_acts(net: AZNet, boards: np.ndarray, layers: Sequence[str]) -> dict[str, Tensor]:
    """{layer: activations flattened to [B, channels * rows * cols]}."""
    check_names(net, layers)
    cache = cache_activations(net, net.game.encode(boards), layers)
    return {k: v.reshape(len(boards), -1) for k, v in cache.items()}


def probe_accuracy(acts: Tensor, labels, groups, seed: int = 0, epochs: int = 150, weight_decay: float = 1e-2) -> dict[str, float]:
    """A regularised linear probe (L2, weight decay) with a split by symmetry orbit: held-out accuracy,
    its 95% interval (bootstrap over test orbits) and the majority-class rate."""
    r = train_probe(acts, torch.as_tensor(labels), seed=seed, epochs=epochs, weight_decay=weight_decay, groups=groups)
    return {"acc": r.test_acc, "low": r.test_ci[0], "high": r.test_ci[1], "majority": r.majority_acc}


def probe_grid(nets: dict[int, AZNet], boards: np.ndarray, labels: dict[str, np.ndarray], layers: Sequence[str],
               groups: np.ndarray, seed: int = 0, progress: Callable | None = None,
               epochs: int = 150) -> dict[str, np.ndarray]:
    """Held-out probe accuracy for every concept x checkpoint x layer: {"acc", "low", "high"} arrays
    [n_concepts, n_checkpoints, n_layers] (concepts in `labels` order, checkpoints in sorted order),
    plus "input" [n_concepts] (the probe on the raw board planes) and "majority" [n_concepts]."""
    its = sorted(nets)
    names = list(labels)
    out = {k: np.full((len(names), len(its), len(layers)), np.nan) for k in ("acc", "low", "high")}
    x_in = boards_to_input(nets[its[0]], boards)
    base = [probe_accuracy(x_in, labels[n], groups, seed, epochs) for n in names]
    out["input"] = np.array([r["acc"] for r in base])
    out["majority"] = np.array([r["majority"] for r in base])
    steps = [(j, it) for j, it in enumerate(its)]
    for j, it in (progress(steps) if progress else steps):
        acts = layer_acts(nets[it], boards, layers)
        for i, n in enumerate(names):
            for k, layer in enumerate(layers):
                r = probe_accuracy(acts[layer], labels[n], groups, seed, epochs)
                out["acc"][i, j, k], out["low"][i, j, k], out["high"][i, j, k] = r["acc"], r["low"], r["high"]
    out["iterations"] = np.array(its)
    return out


def boards_to_input(net: AZNet, boards: np.ndarray) -> Tensor:
    return net.game.encode(boards).reshape(len(boards), -1)


def what_when_where(nets: dict[int, AZNet], boards: np.ndarray, labels: dict[str, np.ndarray], seed: int = 0,
                    epochs: int = 150, progress: Callable | None = None) -> dict[str, np.ndarray]:
    """McGrath's what-when-where, end to end: for every concept (what) x checkpoint (when) x layer
    (where, `layer_names`), the held-out accuracy of a linear probe split by symmetry orbit
    (`Game.orbit_ids`), with its baselines: the same probe on the raw input planes ("input"), the
    network at iteration 0 (row 0 of "acc", the random-init control; iteration 0 must be among
    the checkpoints) and the majority class ("majority"). Same output as `probe_grid`."""
    if not nets or 0 not in nets:
        raise CourseError("what_when_where needs the checkpoint at iteration 0 (the random-init control) among nets")
    its = sorted(nets)
    net0 = nets[its[0]]
    groups = net0.game.orbit_ids(net0.game.check_boards(boards))
    return probe_grid(nets, boards, labels, layer_names(net0), groups, seed=seed, progress=progress, epochs=epochs)


# ------------------------------------------------------------------ NMF (8.1)
def nmf(X: Tensor, k: int, iters: int = 200, seed: int = 0, eps: float = 1e-9) -> tuple[Tensor, Tensor]:
    """Non-negative matrix factorisation X [n, d] ~ W [n, k] @ H [k, d] (Lee and Seung's
    multiplicative updates, Frobenius loss). X must be non-negative (post-ReLU activations)."""
    X = torch.as_tensor(X).double()
    if X.ndim != 2 or (X < 0).any():
        raise CourseError("nmf needs a non-negative matrix [n, d]: take activations after a ReLU")
    if not (isinstance(k, int) and 1 <= k <= min(X.shape)):
        raise CourseError(f"nmf rank k must be an int in 1..{min(X.shape)}, got {k!r}")
    g = torch.Generator().manual_seed(seed)
    scale = (X.mean() / k).sqrt().clamp_min(1e-6)
    W = torch.rand(X.shape[0], k, generator=g, dtype=torch.double) * scale
    H = torch.rand(k, X.shape[1], generator=g, dtype=torch.double) * scale
    for _ in range(iters):
        H *= (W.T @ X) / (W.T @ W @ H + eps)
        W *= (X @ H.T) / (W @ H @ H.T + eps)
    return W.float(), H.float()


def nmf_layer(net: AZNet, boards: np.ndarray, layer: str, k: int, seed: int = 0, iters: int = 200) -> dict[str, Tensor]:
    """NMF of one layer's activations with every (board, square) a row and the channels as columns
    (McGrath et al.): {"maps" [B, k, rows, cols] each component's strength on each square,
    "H" [k, channels] the components, "rel_error" the relative reconstruction error}."""
    act = cache_activations(net, net.game.encode(boards), [layer])[layer]      # [B, C, r, c]
    B, C, r, c = act.shape
    X = act.permute(0, 2, 3, 1).reshape(-1, C)
    W, H = nmf(X, k, iters, seed)
    err = float((X - W @ H).norm() / X.norm().clamp_min(1e-12))
    return {"maps": W.reshape(B, r, c, k).permute(0, 3, 1, 2), "H": H, "rel_error": torch.tensor(err)}


@torch.no_grad()
def ablate_component(net: AZNet, boards: np.ndarray, layer: str, maps: Tensor, H: Tensor, comp: int) -> dict[str, np.ndarray]:
    """Remove component `comp`'s part of the activation (maps[:, comp] outer H[comp], clamped so the
    activation stays >= 0) at `layer`; per board: |change in value| and KL(policy || ablated policy)."""
    x = net.game.encode(boards)
    part = maps[:, comp][:, None] * H[comp][None, :, None, None]     # [B, C, r, c]

    def hook(act, hook):
        return (act - part.to(act.dtype)).clamp_min(0.0)

    logits, value = net(x)
    a_logits, a_value = net.run_with_hooks(x, fwd_hooks=[(layer, hook)])
    mask = torch.from_numpy(net.game.legal_mask(boards))
    lp = torch.log_softmax(logits.masked_fill(~mask, -1e9), -1)
    lq = torch.log_softmax(a_logits.masked_fill(~mask, -1e9), -1)
    kl = (lp.exp() * (lp - lq)).masked_fill(~mask, 0.0).sum(-1)
    return {"dvalue": (a_value - value).abs().numpy(), "kl": kl.numpy()}


def nmf_ablation_test(net: AZNet, boards: np.ndarray, layer: str, k: int, seed: int = 0, n_random: int = 4,
                      iters: int = 200) -> dict[str, Tensor | np.ndarray]:
    """NMF of `layer` (`nmf_layer`, k components, `seed`, `iters`) tested by ablation against a control
    as specific as the claim. For each component c, on the boards where it fires (its total strength
    maps[:, c].sum() in its top fifth, >= the 0.8 quantile) and where it barely fires (bottom half,
    <= the 0.5 quantile), the effect of `ablate_component` (|value change| + KL per board):
    "fired" [k] (mean where it fires), "contrast" [k] (fired minus the mean where it barely fires);
    "random" [k]: the same ablation with H[c] replaced by a random non-negative direction of equal
    norm ON THE SAME MAPS (n_random draws, mean of their "fired"), and "ratio" = fired / random.
    The directions come from g = torch.Generator().manual_seed(seed), drawn in order (component 0's
    n_random draws first), each torch.rand(channels, generator=g) scaled to |H[c]|.
    Also returns "maps" [B, k, rows, cols], "H" [k, channels] and "rel_error"."""
    if not (isinstance(n_random, int) and n_random >= 1):
        raise CourseError(f"n_random must be an int >= 1, got {n_random!r}")
    d = nmf_layer(net, boards, layer, k, seed=seed, iters=iters)
    maps, H = d["maps"], d["H"]
    strength = maps.sum((2, 3)).numpy()
    g = torch.Generator().manual_seed(seed)
    fired, contrast, random = np.zeros(k), np.zeros(k), np.zeros(k)
    for c in range(k):
        hi = strength[:, c] >= np.quantile(strength[:, c], 0.8)
        lo = strength[:, c] <= np.quantile(strength[:, c], 0.5)
        eff = ablate_component(net, boards, layer, maps, H, c)
        e = eff["dvalue"] + eff["kl"]
        fired[c], contrast[c] = e[hi].mean(), e[hi].mean() - e[lo].mean()
        draws = []
        for _ in range(n_random):
            r = torch.rand(H.shape[1], generator=g)
            H_r = H.clone()
            H_r[c] = r / r.norm() * H[c].norm()
            eff_r = ablate_component(net, boards, layer, maps, H_r, c)
            draws.append((eff_r["dvalue"] + eff_r["kl"])[hi].mean())
        random[c] = float(np.mean(draws))
    return {"maps": maps, "H": H, "rel_error": d["rel_error"], "fired": fired, "contrast": contrast,
            "random": random, "ratio": fired / np.maximum(random, 1e-12)}


# ------------------------------------------------------------------ one feature traced back (8.4)
def feature_strength(net: AZNet, x: Tensor, layer: str, H: Tensor, comp: int) -> Tensor:
    """[B] the component's total strength on a board: activation projected on H[comp], summed over squares
    (differentiable in x)."""
    _, cache = net.run_with_cache(x, names_filter=[layer])
    act = cache[layer]
    h = H[comp] / H[comp].norm().clamp_min(1e-12)
    return torch.einsum("bcrk,c->b", act, h.to(act.dtype))


def input_attribution(net: AZNet, boards: np.ndarray, layer: str, H: Tensor, comp: int) -> Tensor:
    """Gradient x input of the feature's strength w.r.t. the two input planes, summed over planes:
    [B, rows, cols], how much each occupied square contributes."""
    x = net.game.encode(boards).requires_grad_(True)
    act = _feature_with_grad(net, x, layer, H, comp)
    (g,) = torch.autograd.grad(act.sum(), x)
    return (g * x).sum(1).detach()


def _feature_with_grad(net, x, layer, H, comp):
    store = {}

    def keep(act, hook):
        store["a"] = act
        return act

    net.run_with_hooks(x, fwd_hooks=[(layer, keep)])
    h = H[comp] / H[comp].norm().clamp_min(1e-12)
    return torch.einsum("bcrk,c->b", store["a"], h.to(store["a"].dtype))


@torch.no_grad()
def square_patching(net: AZNet, clean: np.ndarray, corrupt: np.ndarray, source_layer: str, target_layer: str,
                    H: Tensor, comp: int) -> Tensor:
    """[rows, cols]: fraction of the feature's mean clean-minus-corrupt gap (at `target_layer`)
    recovered when the activation of ONE square of `source_layer` (all channels) is patched from
    the clean run into the corrupt run (ratio of means over the pairs). With source and target the
    same layer, the feature is read from the patched activation itself: each square then recovers
    its own share of the gap (the map sums to 1, a check of the method)."""
    check_names(net, [source_layer, target_layer])
    xc, xk = net.game.encode(clean), net.game.encode(corrupt)
    src = cache_activations(net, xc, [source_layer])[source_layer]
    f_clean = _feature_with_grad(net, xc, target_layer, H, comp)
    f_corr = _feature_with_grad(net, xk, target_layer, H, comp)
    gap = float((f_clean - f_corr).mean())
    if abs(gap) < 1e-8:
        raise CourseError("the feature is the same on clean and corrupt boards: pick a feature the contrast changes")
    h = H[comp] / H[comp].norm().clamp_min(1e-12)
    r, c = net.game.shape
    out = torch.zeros(r, c)
    for i in range(r):
        for j in range(c):
            store = {}

            def patch(act, hook, i=i, j=j):
                act = act.clone()
                act[:, :, i, j] = src[:, :, i, j]
                store["a"] = act           # read here when the target is the patched layer itself
                return act

            def keep(act, hook):
                store["a"] = act
                return act
            hooks = [(source_layer, patch)] + ([(target_layer, keep)] if target_layer != source_layer else [])
            net.run_with_hooks(xk, fwd_hooks=hooks)
            a = store["a"]
            f = torch.einsum("bcrk,c->b", a, h.to(a.dtype))
            out[i, j] = float((f - f_corr).mean()) / gap
    return out


def legal_counts(boards: np.ndarray) -> np.ndarray:
    """[B] bool: the stone counts of a reachable canonical board: the side to move has as many
    stones as the opponent (it moved first) or one fewer (it moved second)."""
    flat = np.asarray(boards).reshape(len(boards), -1)
    d = (flat == 1).sum(1) - (flat == -1).sum(1)
    return (d == 0) | (d == -1)


def threat_pairs(game: Game, boards: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean, corrupt, threat squares [B, rows, cols] bool): for boards where the opponent threatens
    to win at once, the corrupt board EXCHANGES the colours of two stones: one opponent stone of the
    threatening line becomes the side to move's, and one of the side to move's stones off that line
    becomes the opponent's. The occupied squares and both players' stone counts are kept, so the
    corrupt board is a legal position (same gravity, legal counts, game not over) in which the
    threat is broken and no other opponent threat remains; boards without such an exchange are
    skipped. The threat squares are the line's cells."""
    boards = game.check_boards(boards)
    rng = np.random.default_rng(seed)
    wins = winning_moves(game, boards, -1)
    ok = legal_counts(boards) & ~game.finished(boards)
    clean, corrupt, squares = [], [], []
    for b, w, good in zip(boards, wins, ok):
        if not (w.any() and good):
            continue
        flat = b.reshape(-1)
        cand = [ln for ln in game.lines if (flat[ln] == -1).sum() == game.connect - 1 and (flat[ln] == 0).sum() == 1]
        cand = [ln for ln in cand if _completes(game, b, ln)]
        if not cand:
            continue
        ln = cand[rng.integers(len(cand))]
        opp = [i for i in ln if flat[i] == -1]
        own = [i for i in np.flatnonzero(flat == 1) if i not in set(ln)]
        found = None
        for i_opp in rng.permutation(opp):
            for i_own in rng.permutation(own):
                k = flat.copy()
                k[i_opp], k[i_own] = 1, -1
                k = k.reshape(b.shape)
                if not (winning_moves(game, k[None], -1).any() or game.finished(k[None])[0]):
                    found = k
                    break
            if found is not None:
                break
        if found is None:
            continue          # every exchange leaves a threat or ends the game: not a clean contrast
        sq = np.zeros(b.size, dtype=bool)
        sq[ln] = True
        clean.append(b)
        corrupt.append(found)
        squares.append(sq.reshape(b.shape))
    if not clean:
        raise CourseError("no board with an opponent threat that one exchange of stones breaks: sample more "
                          "(or later) positions")
    return np.stack(clean), np.stack(corrupt), np.stack(squares)


def _completes(game: Game, b: np.ndarray, ln) -> bool:
    """The empty cell of line `ln` is playable now (for Connect Four: the cell a stone would fall to)."""
    empty = [i for i in ln if b.reshape(-1)[i] == 0][0]
    if not game.drop:
        return True
    r, c = divmod(empty, game.cols)
    return r == game.rows - 1 or b[r + 1, c] != 0


# ------------------------------------------------------------------ network vs search
def policy_vs_search(net: AZNet, boards: np.ndarray, optimal: np.ndarray, cfg: MCTSConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Per board: is the network's most probable move optimal ("net"), and is the most visited move
    after a search with `cfg` optimal ("search")? optimal [B, A] bool from `Game.optimal_mask`."""
    game = net.game
    with torch_threads(1):
        pri, _ = net.evaluate(boards)
        visits = batched_mcts(net.evaluate, game, boards, cfg, np.random.default_rng(seed))
    ar = np.arange(len(boards))
    return {"net": optimal[ar, pri.argmax(1)], "search": optimal[ar, visits.argmax(1)]}


# ------------------------------------------------------------------ strength
def optimal_move_rate(net: AZNet, boards: np.ndarray, optimal: np.ndarray) -> np.ndarray:
    """[B] bool: the network's most probable legal move keeps the exact value (optimal [B, A])."""
    pri, _ = net.evaluate(boards)
    return optimal[np.arange(len(boards)), pri.argmax(1)]


def match_vs_solver(net: AZNet, n_games: int, seed: int = 0, cfg: MCTSConfig | None = None) -> np.ndarray:
    """Scores [n_games] for the agent (+1 win, 0 draw, -1 loss) against a perfect opponent that picks
    at random among its optimal moves; the agent plays first in even games, second in odd ones, with
    its raw policy (cfg None) or with a search. Perfect play by both sides is a draw in both games."""
    game = net.game
    rng = np.random.default_rng(seed)
    scores = np.zeros(n_games)
    for i in range(n_games):
        b = game.initial(1)
        agent_turn = i % 2 == 0
        while True:
            if agent_turn:
                if cfg is None:
                    a = int(net.evaluate(b)[0].argmax())
                else:
                    a = int(batched_mcts(net.evaluate, game, b, cfg, rng).argmax())
            else:
                a = int(rng.choice(np.flatnonzero(game.optimal_mask(b)[0])))
            b, term, val = game.step(b, [a])
            if term[0]:
                # val is for the side to move now: -1 means the player who just moved won
                scores[i] = -val[0] if agent_turn else val[0]
                break
            agent_turn = not agent_turn
    return scores


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (0.5 = no association)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    ranks = np.argsort(np.argsort(scores, kind="mergesort"), kind="mergesort") + 1.0
    # average ranks over ties
    for v in np.unique(scores):
        m = scores == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    n1, n0 = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
