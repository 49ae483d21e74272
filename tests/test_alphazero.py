"""Chapter 05: reduced Connect Four and its solver, the AlphaZero package (games, batched and simple
MCTS, network, self-play, training), concepts, NMF, the trace, and the shipped checkpoints."""
from functools import lru_cache

import numpy as np
import pytest
import torch

from utils.alphazero import (AZConfig, AZNet, MCTSConfig, all_positions, backup, batched_mcts, get_game,
                             layer_names, load_net, net_state, self_play, simple_mcts, train_alphazero,
                             uniform_evaluator)
from utils.alphazero import concepts as C
from utils.alphazero.games import random_positions
from utils.core import CourseError
from utils.envs import connect_four as c4

TTT, C4 = get_game("tictactoe"), get_game("connect_four")


@lru_cache(maxsize=None)
def _brute(key, shape):
    b = np.array(key, dtype=np.int8).reshape(shape)
    w = c4.winner(b)
    if w is not None:
        return 0 if w == 0 else -1
    return max(-_brute(tuple(c4.play(b, m).reshape(-1)), shape) for m in c4.legal_moves(b))


def test_connect_four_solver_matches_brute_force_minimax():
    rng = np.random.default_rng(0)
    n, values = 0, set()
    while n < 12:
        b = c4.empty_board()
        for _ in range(int(rng.integers(11, 15))):
            if c4.winner(b) is not None:
                break
            b = c4.play(b, int(rng.choice(c4.legal_moves(b))))
        if c4.winner(b) is not None:
            continue
        v = c4.solve(b)
        assert v == _brute(tuple(b.reshape(-1)), b.shape), c4.render(b)
        values.add(v)
        n += 1
    assert len(values) >= 2          # the positions are not all of one value


def test_connect_four_rules_and_bad_input():
    b = c4.board_from_moves([0, 1, 0, 1, 0, 1])
    assert c4.winner(b) is None and 0 in c4.legal_moves(b)
    assert c4.winner(c4.play(b, 0)) == 1
    assert c4.move_values(b)[0] == 1 and c4.solve(b) == 1
    full = c4.board_from_moves([2, 2, 2, 2])
    with pytest.raises(CourseError, match="illegal move"):
        c4.play(full, 2)
    with pytest.raises(CourseError, match="illegal move"):
        c4.play(full, 7)
    with pytest.raises(CourseError, match="shape"):
        c4.solve(np.zeros((3, 3)))
    floating = c4.empty_board()
    floating[0, 0] = 1
    with pytest.raises(CourseError, match="floats"):
        c4.solve(floating)


def test_connect_four_env_protocol():
    env = c4.VsSolver(3, seed=0, opponent="random")
    obs = env.reset(seed=1)
    assert obs.shape == (3, env.obs_dim) and env.n_actions == 5
    done_any = False
    for _ in range(12):
        legal = [int(np.flatnonzero(b[0] == 0)[0]) for b in env.boards]
        obs, r, term, trunc, info = env.step(torch.tensor(legal))
        assert obs.shape == (3, 40) and r.shape == (3,) and set(info) >= {"success", "final_obs"}
        done_any |= bool(term.any())
    assert done_any
    with pytest.raises(CourseError):
        env.step(torch.tensor([0, 9, 0]))
    with pytest.raises(CourseError, match="opponent"):
        c4.VsSolver(2, opponent="alphabeta")


def test_games_steps_values_and_symmetry_orbits():
    pos = all_positions(TTT)
    assert len(pos) == 4520
    with pytest.raises(CourseError, match="unknown game"):
        get_game("chess")
    b = np.array([[1, 1, 0], [-1, -1, 0], [0, 0, 0]], dtype=np.int8)
    nxt, term, val = TTT.step(b[None], [2])
    assert term[0] and val[0] == -1 and (nxt[0] == -np.array([[1, 1, 1], [-1, -1, 0], [0, 0, 0]])).all()
    with pytest.raises(CourseError, match="illegal move"):
        TTT.step(b[None], [0])
    with pytest.raises(CourseError, match="shape"):
        TTT.step(np.zeros((1, 4, 5), np.int8), [0])
    assert TTT.solver_value(b)[0] == 1 and TTT.solver_value(TTT.initial(1))[0] == 0
    ids = TTT.orbit_ids(pos)
    assert len(np.unique(ids)) == 627          # 4520 positions fall into 627 orbits under the 8 symmetries
    flat = pos.reshape(len(pos), -1)
    for cell, _ in TTT.symmetries():
        assert np.array_equal(TTT.orbit_ids(flat[:, cell].reshape(pos.shape)), ids)


def test_batched_search_equals_one_game_search_and_finds_forced_moves():
    for game in (TTT, C4):
        ev = uniform_evaluator(game)
        boards = random_positions(game, 5, seed=3, min_moves=2)
        cfg = MCTSConfig(n_sims=60)
        v = batched_mcts(ev, game, boards, cfg)
        v_readable = batched_mcts(ev, game, boards, cfg, backup_fn=backup)
        assert np.array_equal(v, v_readable)
        for i, b in enumerate(boards):
            assert np.array_equal(v[i], simple_mcts(ev, game, b, cfg))
        assert (v.sum(1) == 60).all()
    block = np.array([[-1, -1, 0], [1, 0, 0], [0, 1, 0]], dtype=np.int8)
    for k in (1, 4):      # virtual batching gathers 4 leaves per network call and still blocks
        vis = batched_mcts(uniform_evaluator(TTT), TTT, block, MCTSConfig(n_sims=200, leaves_per_call=k))
        assert vis[0].argmax() == 2
    with pytest.raises(CourseError, match="finished"):
        batched_mcts(uniform_evaluator(TTT), TTT, np.array([[1, 1, 1], [-1, -1, 0], [0, 0, 0]]), MCTSConfig())


def test_network_hooks_checkpoints_and_bad_input():
    net = AZNet(game="connect_four", channels=8, n_blocks=2)
    boards = random_positions(C4, 6, seed=1)
    logits, value = net(boards)
    assert logits.shape == (6, 5) and value.shape == (6,) and (value.abs() <= 1).all()
    _, cache = net.run_with_cache(C4.encode(boards))
    for name in layer_names(net):
        assert name in cache and (cache[name] >= 0).all()
    with pytest.raises(CourseError, match="network input"):
        net(torch.zeros(2, 3, 4, 5))
    state = net_state(net, half=True)
    back = load_net(state, "connect_four")
    assert torch.allclose(back(boards)[0], logits, atol=5e-2)
    with pytest.raises(CourseError, match="connect_four network, not tictactoe"):
        load_net(state, "tictactoe")


def test_self_play_outcomes_and_training_is_seeded():
    game = TTT
    out = self_play(uniform_evaluator(game), game, 6, MCTSConfig(n_sims=8), np.random.default_rng(0))
    starts = np.flatnonzero(np.r_[True, out["game"][1:] != out["game"][:-1]])
    for g, s in enumerate(starts):       # z at each game's first position is the first player's score
        assert out["z"][s] == out["first_player_score"][g]
        L = out["lengths"][g]
        assert np.allclose(out["z"][s:s + L:2], out["z"][s]) and np.allclose(out["z"][s + 1:s + L:2], -out["z"][s])
    cfg = AZConfig(iterations=2, games_per_iter=4, n_sims=8, train_steps=3, batch_size=16, channels=8,
                   n_blocks=1, n_checkpoints=2, seed=1)
    a, b = train_alphazero(cfg, progress=False), train_alphazero(cfg, progress=False)
    assert sorted(a.checkpoints) == [0, 2]
    for k, v in a.checkpoints[2]["state_dict"].items():
        assert torch.equal(v, b.checkpoints[2]["state_dict"][k])
    assert not torch.equal(a.checkpoints[0]["state_dict"]["stem.weight"], a.checkpoints[2]["state_dict"]["stem.weight"])
    with pytest.raises(CourseError, match="n_sims"):
        AZConfig(n_sims=0)


def test_concepts_on_hand_made_boards():
    b = np.zeros((2, 4, 5), np.int8)
    b[0, 3, :3] = 1                 # three own stones in the bottom row: win at column 3
    b[0, 2, :2] = -1
    b[1, 3, 1:4] = -1                # the opponent threatens columns 0 and 4 (own stones above them)
    b[1, 2, 1:3] = 1
    b[1, 3, 0] = 0
    b[1, 1, 1] = 1
    labels = C.all_concepts(C4, b, ("win_in_1", "opp_threat", "double_threat"))
    assert labels["win_in_1"].tolist() == [1, 0]
    assert labels["opp_threat"].tolist() == [0, 1]
    assert C.winning_moves(C4, b, -1)[1].tolist() == [True, False, False, False, True]
    assert labels["double_threat"].tolist() == [0, 0]
    with pytest.raises(CourseError, match="unknown concept"):
        C.concept_labels(C4, b, "king_safety")


def test_nmf_threat_pairs_ablation_and_auc():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(200, 3, generator=g) @ torch.rand(3, 12, generator=g)
    W, H = C.nmf(X, 3, iters=300)
    assert (W >= 0).all() and (H >= 0).all() and (X - W @ H).norm() / X.norm() < 0.05
    with pytest.raises(CourseError, match="non-negative"):
        C.nmf(-X, 2)
    boards = random_positions(C4, 300, seed=4, min_moves=6)
    clean, corrupt, squares = C.threat_pairs(C4, boards)
    assert C.winning_moves(C4, clean, -1).any(1).all() and not C.winning_moves(C4, corrupt, -1).any(1).any()
    assert (squares.sum((1, 2)) == 4).all() and ((clean != corrupt).sum((1, 2)) == 2).all()
    net = AZNet(game="connect_four", channels=8, n_blocks=1).eval()
    d = C.nmf_layer(net, boards[:50], "blocks.0.hook_resid", 3, iters=50)
    eff = C.ablate_component(net, boards[:50], "blocks.0.hook_resid", d["maps"], d["H"], 0)
    assert (eff["kl"] >= -1e-6).all() and eff["dvalue"].shape == (50,)
    zero = C.ablate_component(net, boards[:50], "blocks.0.hook_resid", d["maps"] * 0, d["H"], 0)
    assert np.allclose(zero["kl"], 0, atol=1e-6) and np.allclose(zero["dvalue"], 0, atol=1e-6)
    assert C.auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0 and C.auc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5


@pytest.mark.parametrize("game, n, moves", [(C4, 400, 6), (TTT, 400, 3)])
def test_threat_pairs_corrupt_boards_are_legal_positions(game, n, moves):
    """The corrupt board must be a position the game can reach: same occupied squares (gravity),
    both players' stone counts kept (the side to move has as many stones as the opponent, or one
    fewer), not finished, the threat broken. Swapping one opponent stone for an own stone (the old
    behaviour) gives the side to move two stones too many."""
    boards = random_positions(game, n, seed=4, min_moves=moves)
    clean, corrupt, squares = C.threat_pairs(game, boards, seed=1)
    assert len(clean) >= 10
    for k in (clean, corrupt):
        assert C.legal_counts(k).all()
    assert np.array_equal((clean == 1).sum((1, 2)), (corrupt == 1).sum((1, 2)))
    assert np.array_equal((clean == -1).sum((1, 2)), (corrupt == -1).sum((1, 2)))
    assert np.array_equal(clean != 0, corrupt != 0)
    assert not game.finished(corrupt).any() and not C.winning_moves(game, corrupt, -1).any()
    changed = clean != corrupt
    assert (changed.sum((1, 2)) == 2).all()
    # one opponent stone of the line became own, one own stone off the line became the opponent's
    assert ((changed & squares & (clean == -1) & (corrupt == 1)).sum((1, 2)) == 1).all()
    assert ((changed & ~squares & (clean == 1) & (corrupt == -1)).sum((1, 2)) == 1).all()
    for b in corrupt[:25]:           # every corrupt board is solvable as a legal position
        game.solver_value(b)


def test_square_patching_same_layer_recovers_each_squares_share():
    """Patching one square of the layer the feature is read from recovers that square's share of
    the gap (the map sums to 1), not the whole clean activation on every square."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = AZNet(game="connect_four", channels=8, n_blocks=1).eval()
    boards = random_positions(C4, 300, seed=4, min_moves=6)
    clean, corrupt, _ = C.threat_pairs(C4, boards)
    layer = "blocks.0.hook_resid"
    d = C.nmf_layer(net, boards[:100], layer, 3, iters=50)
    gaps = [float((C.feature_strength(net, C4.encode(clean), layer, d["H"], k)
                   - C.feature_strength(net, C4.encode(corrupt), layer, d["H"], k)).mean()) for k in range(3)]
    comp = int(np.argmax(np.abs(gaps)))
    same = C.square_patching(net, clean, corrupt, layer, layer, d["H"], comp)
    assert same.shape == (4, 5) and abs(float(same.sum()) - 1.0) < 1e-4
    assert not torch.allclose(same, torch.ones(4, 5))
    # only the squares that differ between clean and corrupt, and their neighbours, carry the gap
    stem = C.square_patching(net, clean, corrupt, "hook_stem", layer, d["H"], comp)
    assert stem.shape == (4, 5) and torch.isfinite(stem).all() and not torch.allclose(stem, torch.ones(4, 5))
    with pytest.raises(CourseError):
        C.square_patching(net, clean, corrupt, "blocks.9.hook_resid", layer, d["H"], comp)


def test_shipped_connect_four_artifacts():
    from utils.alphazero.pretrain import artifact_name, load_positions, load_run

    boards, mv = load_positions()
    assert boards.shape[1:] == (4, 5) and mv.shape == (len(boards), 5)
    assert np.array_equal(np.isnan(mv), ~C4.legal_mask(boards))
    for i in range(5):                 # the shipped labels are the solver's
        assert np.allclose(mv[i][~np.isnan(mv[i])], C4.move_values(boards[i:i + 1])[0][~np.isnan(mv[i])])
    nets, log = load_run(artifact_name(0))
    assert 0 in nets and len(nets) >= 3 and len(log["loss"]) >= 2
    with pytest.raises(CourseError, match="not tictactoe"):
        load_run(artifact_name(0), game="tictactoe")


def test_baselines_negamax_and_matches():
    from utils.alphazero.baselines import (negamax_move_values, negamax_player, play_match, random_player,
                                           solver_player)
    win = np.zeros((4, 5), np.int8)
    win[3, :3] = 1                   # three own stones in the bottom row: column 3 wins at once
    win[2, :2] = -1
    v = negamax_move_values(C4, win, 2)[0]
    assert v[3] == 1 and np.nanmax(np.delete(v, 3)) < 1
    block = -win                     # the opponent threatens column 3: every other move loses
    block[1, 0] = -1                 # (one more own stone keeps the counts legal)
    vb = negamax_move_values(C4, block, 2)[0]
    assert vb[3] > -1 and np.nanmax(np.delete(vb, 3)) == -1
    rng = np.random.default_rng(0)
    assert negamax_player(C4, 2)(block[None], rng) == 3
    # perfect play draws tic-tac-toe; the perfect player never loses to a random one
    assert (play_match(TTT, solver_player(TTT), solver_player(TTT), 6, seed=0) == 0).all()
    sc = play_match(TTT, solver_player(TTT), random_player(TTT), 10, seed=1, opening_plies=0)
    assert (sc >= 0).all() and (sc == 1).any()
    # a depth-2 negamax beats random play from random openings, with either colour
    a = play_match(C4, negamax_player(C4, 2), random_player(C4), 8, seed=2, opening_plies=2)
    assert a.shape == (8,) and a[::2].mean() > 0 and a[1::2].mean() > 0
    with pytest.raises(CourseError, match="depth"):
        negamax_player(C4, 0)
    with pytest.raises(CourseError, match="n_games"):
        play_match(C4, random_player(C4), random_player(C4), 0)
    with pytest.raises(CourseError, match="not over"):
        negamax_move_values(TTT, np.array([[1, 1, 1], [-1, -1, 0], [0, 0, 0]]), 2)


def test_self_play_random_openings_and_config_checks():
    out = self_play(uniform_evaluator(TTT), TTT, 12, MCTSConfig(n_sims=8), np.random.default_rng(3), opening_plies=3)
    starts = np.flatnonzero(np.r_[True, out["game"][1:] != out["game"][:-1]])
    stones = np.count_nonzero(out["boards"][starts].reshape(len(starts), -1), axis=1)
    assert stones.max() <= 3 and stones.min() == 0 and len(set(stones.tolist())) > 1
    assert not TTT.finished(out["boards"]).any() and np.isfinite(out["q"]).all()
    for g, s in enumerate(starts):       # the first player's score: z at the first searched board, by parity
        assert out["first_player_score"][g] == out["z"][s] * (1 if stones[g] % 2 == 0 else -1)
        L = out["lengths"][g]
        assert np.allclose(out["z"][s + 1:s + L:2], -out["z"][s])
    base = self_play(uniform_evaluator(TTT), TTT, 4, MCTSConfig(n_sims=8), np.random.default_rng(0))
    assert (np.count_nonzero(base["boards"][0]) == 0) and base["lengths"].sum() == len(base["z"])
    for bad in (dict(value_target="q"), dict(lr_end=1.0), dict(opening_plies=9), dict(opening_plies=-1)):
        with pytest.raises(CourseError):
            AZConfig(**bad)


def test_replay_buffer_keeps_the_latest_examples_with_every_symmetry():
    from utils.alphazero.training import ReplayBuffer
    buf = ReplayBuffer(TTT, capacity=20)
    b = np.zeros((2, 3, 3), np.int8)
    b[0, 0, 0] = 1                          # a corner stone: its 8 images cover the 4 corners
    pi = np.zeros((2, 9))
    pi[:, 0] = 1
    buf.add(b, pi, np.array([1.0, -1.0]))
    assert len(buf) == 16
    corners = {int(np.flatnonzero(x.reshape(-1))[0]) for x, z in zip(buf.boards, buf.z) if z == 1}
    assert corners == {0, 2, 6, 8}
    for x, p in zip(buf.boards, buf.pi):      # the policy moves with the board
        if x.any():
            assert np.argmax(p) == np.flatnonzero(x.reshape(-1))[0]
    buf.add(b[:1], pi[:1], np.array([0.5]))
    assert len(buf) == 20 and (buf.z[-8:] == 0.5).all() and (buf.z[:4] != 0.5).all()
    x, p, z = buf.sample(5, np.random.default_rng(0))
    assert x.shape == (5, 2, 3, 3) and p.shape == (5, 9) and z.shape == (5,)


def test_worst_case_score_is_exhaustive():
    from utils.alphazero.baselines import random_player, solver_player, worst_case_score
    perfect = worst_case_score(TTT, solver_player(TTT), "any")
    assert perfect["first"] == 0 and perfect["second"] == 0 and perfect["losing_line_first"] == []

    def lowest(board, rng):                 # the lowest free cell: a player that loses
        return int(np.flatnonzero(TTT.legal_mask(board)[0])[0])
    wc = worst_case_score(TTT, lowest, "perfect")
    assert wc["first"] == -1 and wc["second"] == -1
    b, moves = TTT.initial(1), wc["losing_line_first"]  # the line replays to a game the player loses
    for k, a in enumerate(moves):
        assert k % 2 == 1 or a == lowest(b, None)
        b, term, val = TTT.step(b, [a])
    assert term[0] and val[0] == -1 and len(moves) % 2 == 0     # the opponent moved last and won
    assert worst_case_score(TTT, random_player(TTT), "any")["second"] == -1
    with pytest.raises(CourseError, match="opponent"):
        worst_case_score(TTT, lowest, "random")
    with pytest.raises(CourseError, match="positions"):
        worst_case_score(C4, lambda b, rng: int(np.flatnonzero(C4.legal_mask(b)[0])[0]), "any", max_positions=50)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shipped_tictactoe_agents_never_lose(seed):
    """The chapter's bar on the shipped agents: the network alone never loses, first or second, to
    any line of play; its optimal-move rate on all positions is near 1; the random init fails both."""
    from utils.alphazero.baselines import net_player, worst_case_score
    from utils.alphazero.pretrain import artifact_name, load_run
    nets, log = load_run(artifact_name(seed, "tictactoe"), "tictactoe")
    final, init = nets[max(nets)], nets[0]
    boards = all_positions(TTT)
    opt = TTT.optimal_mask(boards)
    assert C.optimal_move_rate(final, boards, opt).mean() >= 0.98
    assert C.optimal_move_rate(init, boards, opt).mean() < 0.9
    wc = worst_case_score(TTT, net_player(final), "any")
    assert wc["first"] == 0 and wc["second"] == 0, wc
    wi = worst_case_score(TTT, net_player(init), "any")
    assert min(wi["first"], wi["second"]) == -1
    assert len(log["loss"]) == 40
    with pytest.raises(CourseError, match="not connect_four"):
        load_run(artifact_name(seed, "tictactoe"), game="connect_four")
