"""Opponents for measuring how strong an agent is, and a match between any two of them.

A *player* is a function (canonical board [1, rows, cols], numpy Generator) -> action. The
players here:

- `net_player(net, cfg)`: the network's most probable legal move (cfg None), or the most visited
  move after a search with `cfg` (no root noise: the agent's own choice, not exploration);
- `solver_player(game)`: a perfect player that breaks ties between optimal moves at random;
- `random_player(game)`: a uniformly random legal move;
- `negamax_player(game, depth)`: a depth-limited negamax, the fixed baseline of chapter 05. It
  sees every win and loss within `depth` plies exactly and scores the positions at the horizon
  with a material-like count (open lines, `concepts.open_lines`); ties broken at random.

`worst_case_score(game, player, opponent)` is the exhaustive version of a match for a
deterministic player: its lowest score over EVERY line the opponent can choose (any legal move,
or any of the solver's optimal moves), as first and as second player. 0 for both on tic-tac-toe
means the player never loses, a proof rather than a sample of games.

`play_match(game, a, b, n_games, seed, opening_plies)` plays a against b, a first in even games
and second in odd ones; `opening_plies` uniformly random moves start each pair of games (the same
opening for both colours), so that two deterministic players still meet in many positions.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from utils.alphazero.games import Game, get_game
from utils.alphazero.mcts import MCTSConfig, batched_mcts
from utils.core import CourseError

Player = Callable[[np.ndarray, np.random.Generator], int]


def _heuristic(game: Game, boards: np.ndarray) -> np.ndarray:
    """Value in (-0.5, 0.5) for the side to move at the search horizon: open lines, own minus
    the opponent's (lines with >= 2 own stones and none of the other's)."""
    flat = boards.reshape(len(boards), -1)[:, game.lines]
    own = (((flat == 1).sum(-1) >= 2) & ((flat == -1).sum(-1) == 0)).sum(-1)
    opp = (((flat == -1).sum(-1) >= 2) & ((flat == 1).sum(-1) == 0)).sum(-1)
    return 0.5 * np.tanh(0.25 * (own - opp))


def negamax_move_values(game: Game, boards: np.ndarray, depth: int) -> np.ndarray:
    """[B, n_actions] depth-limited negamax value of every legal move for the side to move (nan on
    illegal ones): +1 a forced win within `depth` plies, -1 a forced loss, otherwise the horizon's
    heuristic (|value| < 0.5). Batched level by level (at most n_actions ** depth boards)."""
    if not (isinstance(depth, int) and depth >= 1):
        raise CourseError(f"negamax depth must be an int >= 1, got {depth!r}")
    boards = game.check_boards(boards)
    if game.finished(boards).any():
        raise CourseError("negamax needs boards whose game is not over")

    def moves(b: np.ndarray, d: int) -> np.ndarray:
        mask = game.legal_mask(b)
        out = np.full(mask.shape, np.nan)
        bi, ai = np.nonzero(mask)
        nxt, term, val = game.step(b[bi], ai)
        v = np.where(term, -val, 0.0)              # the mover just won: +1; a full board: 0
        live = ~term
        if live.any():
            v[live] = -(value(nxt[live], d - 1))
        out[bi, ai] = v
        return out

    def value(b: np.ndarray, d: int) -> np.ndarray:
        if d == 0:
            return _heuristic(game, b)
        return np.nanmax(moves(b, d), 1)

    return moves(boards, depth)


def negamax_player(game: Game | str, depth: int = 4) -> Player:
    game = get_game(game)
    if not (isinstance(depth, int) and depth >= 1):
        raise CourseError(f"negamax depth must be an int >= 1, got {depth!r}")

    def play(board, rng):
        v = negamax_move_values(game, board, depth)[0]
        best = np.flatnonzero(v >= np.nanmax(v) - 1e-9)
        return int(rng.choice(best))
    return play


def solver_player(game: Game | str) -> Player:
    game = get_game(game)

    def play(board, rng):
        return int(rng.choice(np.flatnonzero(game.optimal_mask(board)[0])))
    return play


def random_player(game: Game | str) -> Player:
    game = get_game(game)

    def play(board, rng):
        return int(rng.choice(np.flatnonzero(game.legal_mask(board)[0])))
    return play


def net_player(net, cfg: MCTSConfig | None = None) -> Player:
    """The network's most probable legal move, or (cfg given) the most visited after a search."""
    game = net.game

    def play(board, rng):
        if cfg is None:
            pri, _ = net.evaluate(board)
            return int(np.where(game.legal_mask(board)[0], pri[0], -np.inf).argmax())
        return int(batched_mcts(net.evaluate, game, board, cfg, rng).argmax())
    return play


def worst_case_score(game: Game | str, player: Player, opponent: str = "any",
                     max_positions: int = 200_000) -> dict:
    """The deterministic `player`'s lowest score (+1 win, 0 draw, -1 loss) over every line of play of
    the opponent: "any" (every legal move) or "perfect" (every move the exact solver rates optimal),
    from the empty board as first and as second player. Returns {"first", "second", "positions"
    (distinct positions where the player moved), "losing_line_first" / "losing_line_second" (the
    moves of one game the player loses, [] if none)}. The player must be deterministic (it is
    asked once per position, with a fixed generator): a network's argmax, or a search without
    root noise. Made for tic-tac-toe (a few hundred positions); `max_positions` stops a game tree
    too large to walk with a CourseError."""
    game = get_game(game)
    if opponent not in ("any", "perfect"):
        raise CourseError(f"opponent must be 'any' (every legal move) or 'perfect' (every optimal move), got {opponent!r}")
    memo: dict[tuple[bytes, bool], tuple[float, list[int]]] = {}
    moves: dict[bytes, int] = {}
    rng = np.random.default_rng(0)

    def value(b: np.ndarray, agent: bool) -> tuple[float, list[int]]:
        key = (b.tobytes(), agent)
        if key in memo:
            return memo[key]
        if agent:
            if b.tobytes() not in moves:
                if len(moves) >= max_positions:
                    raise CourseError(f"more than {max_positions} positions: worst_case_score walks the whole game "
                                      "tree, use play_match on a game this large")
                moves[b.tobytes()] = int(player(b[None], rng))
            acts = [moves[b.tobytes()]]
        else:
            mask = game.optimal_mask(b[None])[0] if opponent == "perfect" else game.legal_mask(b[None])[0]
            acts = np.flatnonzero(mask).tolist()
        best = None
        for a in acts:
            nb, term, val = game.step(b[None], [a])
            if term[0]:
                mover = 0.0 - float(val[0])             # +1: the mover completed a line
                r = (mover if agent else -mover) + 0.0, [a]
            else:
                v, line = value(nb[0], not agent)
                r = v, [a] + line
            if best is None or r[0] < best[0]:
                best = r
        memo[key] = best
        return best

    first, second = value(game.initial(1)[0], True), value(game.initial(1)[0], False)
    return {"first": first[0], "second": second[0], "positions": len(moves),
            "losing_line_first": first[1] if first[0] < 0 else [],
            "losing_line_second": second[1] if second[0] < 0 else []}


def play_match(game: Game | str, a: Player, b: Player, n_games: int, seed: int = 0,
               opening_plies: int = 0) -> np.ndarray:
    """Scores [n_games] for player a (+1 win, 0 draw, -1 loss) against player b: a moves first in
    even games and second in odd ones; games 2i and 2i + 1 start from the same opening of
    `opening_plies` uniformly random moves (an opening that ends the game is drawn again)."""
    game = get_game(game)
    if not (isinstance(n_games, int) and n_games >= 1):
        raise CourseError(f"n_games must be an int >= 1, got {n_games!r}")
    if not (isinstance(opening_plies, int) and 0 <= opening_plies < game.rows * game.cols):
        raise CourseError(f"opening_plies must be an int in 0..{game.rows * game.cols - 1}, got {opening_plies!r}")
    rng = np.random.default_rng(seed)
    scores = np.zeros(n_games)
    opening = game.initial(1)
    for i in range(n_games):
        if i % 2 == 0:
            while True:
                opening, ok = game.initial(1), True
                for _ in range(opening_plies):
                    opening, term, _ = game.step(opening, [rng.choice(np.flatnonzero(game.legal_mask(opening)[0]))])
                    if term[0]:
                        ok = False
                        break
                if ok:
                    break
        b_ = opening.copy()
        # the player to move after the opening: a moves first in even games (counting from the opening)
        a_turn = i % 2 == 0
        while True:
            act = (a if a_turn else b)(b_, rng)
            b_, term, val = game.step(b_, [act])
            if term[0]:
                scores[i] = -val[0] if a_turn else val[0]
                break
            a_turn = not a_turn
    return scores
