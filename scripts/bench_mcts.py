"""Benchmark: self-play games per second of the course's batched MCTS against one game at a time.

Chapter 05 trains AlphaZero agents by self-play, and a learner waits on it. Three ways to play
the same self-play games with the same network and the same number of PUCT simulations per
move, in one run, on one torch thread:

- `batched`: utils.alphazero.self_play, all games at once, one network call per simulation
  round for every unfinished game (utils.alphazero.batched_mcts);
- `one game at a time`: the same self_play with batched=False, i.e. utils.alphazero.simple_mcts,
  one network call per leaf, Python node objects (what one writes first);
- `OpenSpiel`: open_spiel's MCTSBot (PUCT child selection, solve=False, Dirichlet noise at the
  root) with an evaluator that calls the same network, on OpenSpiel's own game
  (tic_tac_toe, or connect_four with rows=4, columns=5).

Printed: games per second of each and the ratios (batched over each of the others).

    python scripts/bench_mcts.py [--game connect_four] [--games 64] [--slow-games 8] [--sims 32]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.alphazero import AZNet, MCTSConfig, get_game, self_play  # noqa: E402
from utils.core import CourseError, set_seed  # noqa: E402


def openspiel_games(net: AZNet, n_games: int, sims: int, seed: int) -> float:
    """Seconds for n_games of OpenSpiel MCTSBot self-play with the network as evaluator."""
    import pyspiel
    from open_spiel.python.algorithms import mcts

    game = net.game
    if game.drop:
        os_game = pyspiel.load_game("connect_four", {"rows": game.rows, "columns": game.cols})
    else:
        os_game = pyspiel.load_game("tic_tac_toe")

    def board_of(state) -> np.ndarray:
        """Our canonical board, rebuilt from OpenSpiel's move history (no layout guesswork)."""
        b = game.initial(1)
        for a in state.history():
            b, _, _ = game.step(b, [a])
        return b

    class NetEvaluator(mcts.Evaluator):
        def evaluate(self, state):
            if state.is_terminal():
                return np.array(state.returns())
            _, v = net.evaluate(board_of(state))
            p = state.current_player()
            out = np.zeros(2)
            out[p], out[1 - p] = v[0], -v[0]
            return out

        def prior(self, state):
            pri, _ = net.evaluate(board_of(state))
            return [(a, float(pri[0, a])) for a in state.legal_actions()]

    rng = np.random.RandomState(seed)
    bot = mcts.MCTSBot(os_game, uct_c=1.5, max_simulations=sims, evaluator=NetEvaluator(), solve=False,
                       random_state=rng, child_selection_fn=mcts.SearchNode.puct_value,
                       dirichlet_noise=(0.25, 0.5))
    t0 = time.time()
    for _ in range(n_games):
        state = os_game.new_initial_state()
        while not state.is_terminal():
            state.apply_action(bot.step(state))
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--game", default="connect_four")
    ap.add_argument("--games", type=int, default=64, help="games played by the batched search")
    ap.add_argument("--slow-games", type=int, default=8, help="games played one at a time (and by OpenSpiel)")
    ap.add_argument("--sims", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if min(args.games, args.slow_games, args.sims) < 1:
        raise SystemExit("bench_mcts: --games, --slow-games and --sims must be positive")
    try:
        game = get_game(args.game)
    except CourseError as e:
        raise SystemExit(f"bench_mcts: {e}") from None
    torch.set_num_threads(1)
    set_seed(args.seed)
    net = AZNet(game=game.name, channels=32, n_blocks=2).eval()
    cfg = MCTSConfig(n_sims=args.sims)
    rows = {}
    t0 = time.time()
    out = self_play(net.evaluate, game, args.games, cfg, np.random.default_rng(args.seed), batched=True)
    rows["batched (course)"] = (args.games, time.time() - t0, out["lengths"].mean())
    t0 = time.time()
    out = self_play(net.evaluate, game, args.slow_games, cfg, np.random.default_rng(args.seed), batched=False)
    rows["one game at a time"] = (args.slow_games, time.time() - t0, out["lengths"].mean())
    try:
        rows["OpenSpiel MCTSBot"] = (args.slow_games, openspiel_games(net, args.slow_games, args.sims, args.seed),
                                     float("nan"))
    except ImportError as e:
        print(f"OpenSpiel not available ({e}): skipped")
    print(f"{game.name}, {args.sims} simulations per move, same random-init network, 1 torch thread")
    print(f"{'method':<22}{'games':>7}{'seconds':>10}{'games/s':>10}{'mean plies':>12}")
    for k, (n, sec, plies) in rows.items():
        print(f"{k:<22}{n:>7}{sec:>10.2f}{n / sec:>10.2f}{plies:>12.1f}")
    fast = rows["batched (course)"][0] / rows["batched (course)"][1]
    for k, (n, sec, _) in rows.items():
        if k != "batched (course)":
            print(f"ratio batched / {k}: {fast / (n / sec):.1f}x")


if __name__ == "__main__":
    main()
