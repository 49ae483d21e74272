"""Chapter 08 (planning in a model-free recurrent agent): the DRC agent and its hooks, recurrent
PPO with truncated BPTT, greedy play with thinking steps, pacing, plan labels and square probes,
the steering and ablation hooks, and the shipped checkpoints."""
import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.envs.sokoban import DOWN, LEFT, NOOP, RIGHT, UP, Level, LevelBank, Sokoban
from utils.models.drc import DRC, ConvBaseline, build_agent, agent_arch, matched_baseline, n_params
from utils.planning.intervene import projection_hook, square_edit_hook, steer_first_move
from utils.planning.play import pacing, play, thinking_curve
from utils.planning.probes import fit_square_probe, macro_f1, obs_features, plan_labels, record_on_observations, square_rows
from utils.planning.train import TrainConfig, load_agent, heldout_bank
from utils.rl.recurrent_ppo import RecurrentPPOConfig, _windows, train_recurrent_ppo, unroll


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _level(text: str) -> Level:
    rows = text.strip("\n").split("\n")
    side = max(len(rows), max(map(len, rows)))
    rows = [row.ljust(side, "#") for row in rows] + ["#" * side] * (side - len(rows))
    walls = np.array([[ch == "#" for ch in row] for row in rows])
    find = lambda chars: tuple((r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch in chars)
    return Level(walls, find(".*+"), find("$*"), find("@+")[0])


CORRIDOR = LevelBank.from_levels([_level("""
#######
#@ $ .#
#     #
#######
""")])


def _drc(seed=0, **kw):
    torch.manual_seed(seed)
    return DRC((5, 7, 7), 5, **{"channels": 8, "depth": 2, "ticks": 2, "hidden": 16, **kw})


def test_drc_shapes_hooks_and_ticks():
    m = _drc()
    obs = torch.rand(3, 5, 7, 7)
    logits, value, (h, c) = m.step(obs)
    assert logits.shape == (3, 5) and value.shape == (3,) and h.shape == c.shape == (3, 2, 8, 7, 7)
    names = [m.hook_name("h", d, n) for d in range(2) for n in range(2)]
    _, cache = m.run_with_cache(obs, names_filter=names + ["hook_enc"])
    assert all(cache[k].shape == (3, 8, 7, 7) for k in names)
    assert torch.allclose(cache["hook_h.1.1"], h[:, 1])          # last tick of the top layer is the new state
    assert not torch.allclose(cache["hook_h.1.0"], cache["hook_h.1.1"])
    # the state carries information: a second step from the new state differs from one from zeros
    assert not torch.allclose(m.step(obs, (h, c))[0], m.step(obs)[0])


def test_pool_and_inject_crosses_the_board_in_one_tick():
    m = _drc(depth=1, ticks=1)
    obs = torch.zeros(1, 5, 7, 7)
    h0, c0 = m.initial_state(1)
    h1 = h0.clone()
    h1[0, 0, :, 1, 1] = 1.0                                        # state only in the top-left corner
    out0 = m.step(obs, (h0, c0))[2][0][0, 0, :, 5, 5]
    out1 = m.step(obs, (h1, c0))[2][0][0, 0, :, 5, 5]              # far corner: beyond the 3x3 kernel
    assert not torch.allclose(out0, out1)


def test_drc_bad_inputs_are_one_line_errors():
    m = _drc()
    with pytest.raises(CourseError, match="unknown tick"):
        m.hook_name("h", 0, 2)
    with pytest.raises(CourseError, match="unknown layer"):
        m.hook_name("h", 5, 0)
    with pytest.raises(CourseError, match="state must be"):
        m.step(torch.rand(2, 5, 7, 7), (torch.zeros(2, 2, 8, 6, 6), torch.zeros(2, 2, 8, 6, 6)))
    with pytest.raises(CourseError, match="observations"):
        m.step(torch.rand(2, 4, 7, 7))
    with pytest.raises(CourseError, match="positive int"):
        DRC(ticks=0)


def test_matched_baseline_and_rebuild():
    m = _drc()
    b = matched_baseline(m)
    assert abs(n_params(b) - n_params(m)) / n_params(m) < 0.1
    assert b.step(torch.rand(2, 5, 7, 7))[2] == ()
    for model in (m, b):
        again = build_agent(agent_arch(model))
        again.load_state_dict(model.state_dict())
        x = torch.rand(2, 5, 7, 7)
        assert torch.allclose(again.step(x, model.initial_state(2))[0], model.step(x, model.initial_state(2))[0])


def test_unroll_resets_state_at_episode_starts():
    m = _drc()
    obs = torch.rand(4, 2, 5, 7, 7)
    starts = torch.zeros(4, 2)
    starts[0] = 1
    starts[2, 1] = 1
    logits, values, _ = unroll(m, obs, starts, m.initial_state(2))
    # env 1 restarts at step 2: its outputs from there equal a fresh run on steps 2..3
    fresh, _, _ = unroll(m, obs[2:, 1:], torch.tensor([[1.0], [0.0]]), m.initial_state(1))
    assert torch.allclose(logits[2:, 1:], fresh, atol=1e-6)
    assert not torch.allclose(logits[2:, :1], unroll(m, obs[2:, :1], torch.tensor([[1.0], [0.0]]), m.initial_state(1))[0])


def test_windows_layout():
    x = torch.arange(8 * 3).reshape(8, 3)        # T=8, N=3
    w = _windows(x, 4)
    assert w.shape == (6, 4)
    assert w[0].tolist() == [0, 3, 6, 9] and w[4].tolist() == [13, 16, 19, 22]   # row k*N + n


def test_recurrent_ppo_learns_the_corridor():
    """PPO with truncated BPTT solves a one-push corridor (random play rarely does)."""
    env = Sokoban(8, CORRIDOR, max_steps=12, seed=0)
    m = _drc(channels=8, depth=1, ticks=1)
    cfg = RecurrentPPOConfig(total_steps=8 * 16 * 20, n_envs=8, n_steps=16, bptt_len=4, n_minibatches=4, lr=3e-3, seed=0)
    res = train_recurrent_ppo(cfg, m, env, progress=False)
    assert play(m, CORRIDOR, max_steps=12).solved.all()
    assert len(res.log["success"]) == cfg.n_iterations


def test_recurrent_ppo_config_errors():
    with pytest.raises(CourseError, match="bptt_len"):
        RecurrentPPOConfig(n_steps=10, bptt_len=4).validate()
    with pytest.raises(CourseError, match="n_envs"):
        train_recurrent_ppo(RecurrentPPOConfig(n_envs=4, n_steps=8, bptt_len=4, n_minibatches=2, total_steps=64),
                            _drc(), Sokoban(2, CORRIDOR), progress=False)


def test_play_thinking_steps_and_labels_on_a_scripted_agent():
    class Scripted(torch.nn.Module):
        """Feed-forward: right, right, right (solves the corridor in 3)."""
        hook_dict = {}

        def initial_state(self, n, device=None):
            return ()

        def step(self, obs, state):
            return torch.nn.functional.one_hot(torch.full((obs.shape[0],), RIGHT), 5).float(), torch.zeros(obs.shape[0]), ()

        def hooks(self, fwd_hooks=()):
            import contextlib
            return contextlib.nullcontext()

    p = play(Scripted(), CORRIDOR, max_steps=6, think=3)
    assert p.solved.all() and p.length[0] == 3 and p.actions[0, :4].tolist() == [RIGHT] * 3 + [-1]
    lab = plan_labels(p, horizon=2)
    assert lab["agent"][0, 0, 1, 1] == RIGHT + 1 and lab["agent"][0, 0, 1, 2] == RIGHT + 1
    assert lab["agent"][0, 0, 1, 3] == 0                      # 2 steps ahead only
    assert lab["box"][0, 0, 1, 3] == RIGHT + 1                # pushed off (1, 3) at step 1
    assert lab["box"][0, 0, 1, 4] == 0 and lab["box"][0, 1, 1, 4] == RIGHT + 1   # off (1, 4) at step 2
    with pytest.raises(CourseError, match="thinking-step"):
        play(Scripted(), CORRIDOR, think=-1)


def test_thinking_changes_the_drc_but_not_the_baseline():
    bank = heldout_bank(TrainConfig(), 6)
    m, b = _drc(), matched_baseline(_drc())
    p0 = play(m, bank, think=0, record=("hook_h.1.1",))
    p4 = play(m, bank, think=4, record=("hook_h.1.1",))
    assert not torch.allclose(p0.acts["hook_h.1.1"][:, 0], p4.acts["hook_h.1.1"][:, 0])
    q0, q4 = play(b, bank, think=0), play(b, bank, think=4)
    assert (q0.actions == q4.actions).all()
    curve = thinking_curve(b, bank, (0, 2))
    assert set(curve) == {0, 2} and (curve[0] == curve[2]).all()


def test_pacing_counts_noops_and_reversals():
    acts = np.array([[NOOP, UP, DOWN, LEFT, -1], [RIGHT, RIGHT, RIGHT, RIGHT, RIGHT]])
    out = pacing(acts, first=5)
    assert np.allclose(out["noop"], [0.25, 0]) and np.allclose(out["back_and_forth"], [0.25, 0])
    assert np.allclose(out["pacing"], [0.5, 0])


def test_macro_f1_and_obs_features():
    assert macro_f1(np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4])) == 1.0
    assert macro_f1(np.array([0, 0, 0, 0]), np.array([1, 2, 3, 4])) == 0.0
    assert abs(macro_f1(np.array([1, 1, 0]), np.array([1, 0, 0])) - 2 / 3) < 1e-9
    obs = torch.zeros(2, 5, 7, 7)
    obs[0, 4, 3, 3] = 1
    f = obs_features(obs)
    assert f.shape == (2, 45, 7, 7)
    assert f[0, 4 * 9 + 4, 3, 3] == 1 and f[0, 4 * 9 + 5, 3, 2] == 1     # centre, and right neighbour of (3, 2)


def test_random_agent_replays_observations_exactly():
    bank = heldout_bank(TrainConfig(), 4)
    m = _drc()
    p = play(m, bank, record=("hook_h.0.1",), keep_obs=True, max_steps=8)
    rec = record_on_observations(m, p.obs, p.live, ["hook_h.0.1"])
    assert torch.allclose(rec["hook_h.0.1"], p.acts["hook_h.0.1"], atol=1e-5)


def test_edit_hooks_check_shapes():
    with pytest.raises(CourseError, match="squares"):
        square_edit_hook(torch.zeros(3, 8), np.zeros((2, 2), int))
    hook = square_edit_hook(torch.ones(2, 8), np.array([[1, 1], [2, 3]]))
    with pytest.raises(CourseError, match="does not match"):
        hook(torch.zeros(2, 6, 7, 7), None)
    out = hook(torch.zeros(2, 8, 7, 7), None)
    assert out.sum() == 16 and out[1, :, 2, 3].sum() == 8
    proj = projection_hook(torch.eye(8)[:2])
    x = torch.rand(1, 8, 7, 7)
    assert torch.allclose(proj(x, None)[:, :2], torch.zeros(1, 2, 7, 7), atol=1e-6)
    assert torch.allclose(proj(x, None)[:, 2:], x[:, 2:], atol=1e-6)
    with pytest.raises(CourseError, match="directions"):
        steer_first_move(_drc(), CORRIDOR, torch.zeros(3, 8), 1, 1.0)


def test_shipped_agents_are_competent_and_a_plan_probe_beats_the_random_init_agent():
    """Every shipped DRC seed clears chapter 08's competence bar (COMPETENCE_BAR = 0.6 of held-out
    rooms, greedy, no thinking) and beats a random policy; its top layer decodes the agent's own
    next move (the agent's square) better than a random-init DRC fed the same observations."""
    from utils.planning.probes import plan_probe_by_distance

    bank = heldout_bank(TrainConfig(), 60)
    rand_policy = play(_drc(seed=5, channels=16, hidden=64), bank, greedy=False, seed=0)
    for s in (0, 1, 2):
        assert play(load_agent("drc", s), bank).solve_rate >= 0.6
    p = play(load_agent("drc", 1), bank, record=("hook_h.1.1",), keep_obs=True)
    assert p.solve_rate > rand_policy.solve_rate + 0.3
    torch.manual_seed(7)
    rand = record_on_observations(DRC((5, 7, 7), 5, 16, 2, 2, 64), p.obs, p.live, ["hook_h.1.1"])
    own = plan_probe_by_distance(p, p.acts["hook_h.1.1"], epochs=100)[1]["agent's square"]["f1"]
    own_rand = plan_probe_by_distance(p, rand["hook_h.1.1"], epochs=100)[1]["agent's square"]["f1"]
    assert own > own_rand + 0.05


def test_load_agent_errors():
    with pytest.raises(CourseError, match="kind"):
        load_agent("lstm", 0)


def test_sampled_play_is_reproducible_and_thinking_curve_uses_one_seed():
    bank = heldout_bank(TrainConfig(), 5)
    m = _drc()
    a, b = play(m, bank, greedy=False, seed=3), play(m, bank, greedy=False, seed=3)
    assert (a.actions == b.actions).all()
    curve = thinking_curve(matched_baseline(_drc()), bank, (0, 4), greedy=False, seed=3)
    assert (curve[0] == curve[4]).all()     # the baseline has no state: same samples, same outcome


def test_bad_levels_and_hidden_states_are_one_line_errors():
    from utils.planning.data import discounted_returns, solution_episodes, with_solutions
    from utils.planning.intervene import ablate_subspace
    from utils.planning.probes import class_direction, window_labels

    stuck = _level("""
######
#$   #
# @ .#
#    #
######
""")
    with pytest.raises(CourseError, match="level 1 is unsolvable") as e:
        with_solutions([CORRIDOR[0], stuck])
    assert "\n" not in str(e.value)
    bank = with_solutions([CORRIDOR[0]])
    assert bank[0].moves == (RIGHT, RIGHT, RIGHT)
    no_border = Level(np.zeros((5, 5), bool), ((2, 2),), ((2, 3),), (1, 1))
    with pytest.raises(CourseError, match="wall border"):
        with_solutions([no_border])
    with pytest.raises(CourseError, match="optimal solution"):
        solution_episodes(LevelBank.from_levels([stuck]))
    drc = _drc()
    with pytest.raises(CourseError, match="unknown layer"):
        ablate_subspace(drc, CORRIDOR, torch.zeros(2, 8), layer=5)
    with pytest.raises(CourseError, match="unknown hook"):
        play(drc, CORRIDOR, record=("hook_h.9.0",))
    with pytest.raises(CourseError, match="basis must be"):
        ablate_subspace(drc, CORRIDOR, torch.zeros(2, 6), layer=1)
    with pytest.raises(CourseError, match="channels in dim 1"):
        projection_hook(torch.eye(8)[:2])(torch.zeros(1, 6, 7, 7), None)
    with pytest.raises(CourseError, match=r"\[T, n\]"):
        discounted_returns(torch.zeros(4, 2), torch.zeros(4, 3), 0.9)
    with pytest.raises(CourseError, match="events must be"):
        window_labels(np.zeros((3, 4)), 2)
    with pytest.raises(CourseError, match="direction 1-4"):
        class_direction(torch.zeros(5, 8), 0)


def test_window_labels_earliest_event_wins():
    from utils.planning.probes import window_labels

    ev = np.zeros((1, 5, 1, 1), int)
    ev[0, 1], ev[0, 3] = 2, 4
    lab = window_labels(ev, 3)[0, :, 0, 0]
    assert lab.tolist() == [2, 2, 4, 4, 0]
    assert window_labels(ev, 1)[0, :, 0, 0].tolist() == [0, 2, 0, 4, 0]


def test_path_squares_stop_at_walls_and_skip_the_agent():
    from utils.planning.intervene import path_squares

    env = Sokoban(1, CORRIDOR, auto_reset=False)
    env.set_levels(np.array([0]))
    agent, walls = env.agent.copy(), env.walls.copy()          # agent at (1, 1) in a 2 x 5 corridor
    assert path_squares(agent, walls, np.array([RIGHT + 1]), 1, 3) == [[(1, 2), (1, 3), (1, 4)]]
    assert path_squares(agent, walls, np.array([RIGHT + 1]), 2, 3) == [[(1, 3), (1, 4)]]
    assert path_squares(agent, walls, np.array([DOWN + 1]), 1, 3) == [[(2, 1)]]    # cut at the wall below
    assert path_squares(agent, walls, np.array([UP + 1]), 1, 3) == [[]]            # a wall first: no route
    assert path_squares(agent, walls, np.array([0]), 1, 3) == [[]]
    with pytest.raises(CourseError, match="start"):
        path_squares(agent, walls, np.array([1]), 0, 3)


def test_steer_path_edits_only_the_route_away_from_the_agent():
    from utils.planning.intervene import steer_away, steer_path

    m = _drc()
    bank = heldout_bank(TrainConfig(), 6)
    dirs = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    none = steer_path(m, bank, dirs, 1, 5.0, np.zeros(6, int))
    assert torch.allclose(none, m(Sokoban(6, bank, auto_reset=False).set_levels(np.arange(6))))
    targets = np.array([RIGHT + 1, LEFT + 1, UP + 1, DOWN + 1, RIGHT + 1, 0])
    env = Sokoban(6, bank, auto_reset=False)
    env.set_levels(np.arange(6))
    from utils.planning.intervene import path_squares
    routed = np.array([bool(sq) for sq in path_squares(env.agent, env.walls, targets, 1, 2)])
    edited = steer_path(m, bank, dirs, 1, 5.0, targets, start=1, length=2)
    changed = (edited - none).abs().amax(1) > 1e-6
    assert routed.any() and (changed == torch.as_tensor(routed)).all()    # edited exactly where a route exists
    with pytest.raises(CourseError, match="one target per level"):
        steer_path(m, bank, dirs, 1, 5.0, targets[:3])
    out = steer_away(m, bank, dirs, 1, 5.0, controls={"other": dirs.flip(0)}, start=2, length=3, seed=0)
    assert set(out) == {"target", "valid", "probe", "other", "isotropic", "probe_decoy", "other_decoy",
                        "isotropic_decoy"}
    assert ((out["target"] > 0) == out["valid"]).all() and not (out["probe"] & ~out["valid"]).any()


def test_load_agent_stages():
    with pytest.raises(CourseError, match="training stage"):
        load_agent("drc", 0, stage="sft")
    bc, rl = load_agent("drc", 0, stage="bc"), load_agent("drc", 0)
    assert any(not torch.equal(a, b) for a, b in zip(bc.state_dict().values(), rl.state_dict().values()))
