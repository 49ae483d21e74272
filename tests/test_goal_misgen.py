"""Chapter 06: the maze, Monster Gridworld and CoinRun environments, the conv policy, and the
goal-misgeneralisation analysis (utils.goal_misgen)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.envs import COURSE_ENVS, make_env
from utils.envs.coin_run import CoinRunEnv
from utils.envs.maze import (CHANNELS, MazeEnv, bfs_distances, channel_index, encode, generate_maze, make_gym_env,
                             maze_layouts)
from utils.envs.monster_gridworld import MonsterGridworld
from utils.goal_misgen import analysis as A
from utils.goal_misgen.behaviour import UniformPolicy, coinrun_behaviour, maze_behaviour, monster_behaviour
from utils.models.conv_policy import HookedConvPolicy

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the maze
@pytest.mark.parametrize("n_cells", [2, 3, 4, 5])
def test_generated_mazes_are_perfect(n_cells):
    """Every room reachable, and one path between any two squares (a tree: edges = nodes - 1)."""
    for seed in range(5):
        w = generate_maze(n_cells, np.random.default_rng(seed))
        open_sq = np.argwhere(~w)
        d = bfs_distances(w, open_sq[0])
        assert (d[~w] >= 0).all()
        edges = int((~w[:, 1:] & ~w[:, :-1]).sum() + (~w[1:] & ~w[:-1]).sum())
        assert edges == len(open_sq) - 1
        assert len(open_sq) == 2 * n_cells * n_cells - 1


def test_maze_cheese_region_train_vs_anywhere():
    env = MazeEnv(300, seed=0)
    assert env.in_region(env.cheese, env.grid).all()
    assert not env.in_region(env.agent, env.grid).any()
    assert not env.walls[np.arange(300), env.cheese[:, 0], env.cheese[:, 1]].any()
    anywhere = MazeEnv(300, seed=0, cheese="anywhere")
    share = anywhere.in_region(anywhere.cheese, anywhere.grid).mean()
    assert share < 0.5
    half = MazeEnv(600, seed=1, rand_frac=0.5)
    assert 0.5 < half.in_region(half.cheese, half.grid).mean() < 0.85


def test_maze_sizes_sit_bottom_left_and_corner_is_open():
    env = MazeEnv(200, sizes=(2, 3, 4), region=1, seed=3)
    assert set(env.grid.tolist()) == {3, 5, 7}
    corner = env.corner()
    assert not env.walls[np.arange(200), corner[:, 0], corner[:, 1]].any()
    small = env.grid == 3
    assert env.walls[small][:, :4].all()  # the rows above a small maze are wall


def test_maze_protocol_step_and_reward():
    env = MazeEnv(1, sizes=(2,), region=1, seed=0, auto_reset=False)
    walls = np.ones((1, 3, 3), bool)
    walls[0, 0, :] = False
    walls[0, :, 2] = False   # an L: (0,0) (0,1) (0,2) (1,2) (2,2)
    env.set_state(walls, np.array([[0, 0]]), np.array([[2, 2]]))
    obs, r, term, trunc, info = env.step(torch.tensor([1]))   # down into a wall: no move
    assert tuple(env.agent[0]) == (0, 0) and obs.shape == (1, env.obs_dim) and not term[0]
    for a in (3, 3):
        env.step(torch.tensor([a]))
    assert info["corner_first"].dtype == torch.bool
    _, _, _, _, info = env.step(torch.tensor([1]))
    assert bool(info["reached_corner"][0]) and bool(info["corner_first"][0])
    _, r, term, _, info = env.step(torch.tensor([1]))
    assert term[0] and r[0] == 1.0 and info["success"][0]


def test_maze_auto_reset_and_seed_reproducible():
    a, b = MazeEnv(8, seed=5), MazeEnv(8, seed=5)
    assert torch.equal(a.reset(seed=1), b.reset(seed=1))
    rng = np.random.default_rng(0)
    for _ in range(60):
        acts = rng.integers(0, 4, 8)
        oa, *_, ia = a.step(acts)
        ob, *_, ib = b.step(acts)
        assert torch.equal(oa, ob)
    obs = a.reset()
    assert obs.shape == (8, 3 * a.side * a.side)


def test_encode_channels_and_absent_cheese():
    lay = maze_layouts(4, seed=0)
    obs = encode(lay["walls"], lay["agent"], np.full((4, 2), -1)).reshape(4, 3, 7, 7)
    assert obs[:, channel_index("cheese")].sum() == 0 and obs[:, channel_index("agent")].sum() == 4
    assert CHANNELS == ("walls", "agent", "cheese")


@pytest.mark.parametrize("kwargs, msg", [
    (dict(sizes=(1,)), "sizes"), (dict(sizes=(3,), region=5), "region"), (dict(cheese="left"), "cheese must be"),
    (dict(rand_frac=1.5), "rand_frac"), (dict(max_steps=0), "max_steps")])
def test_maze_bad_configs(kwargs, msg):
    with pytest.raises(CourseError, match=msg):
        MazeEnv(2, **kwargs)


def test_maze_bad_inputs():
    with pytest.raises(CourseError, match="unknown maze channel"):
        channel_index("mouse")
    with pytest.raises(CourseError, match="2 x 2"):
        generate_maze(1, np.random.default_rng(0))
    env = MazeEnv(2, seed=0)
    with pytest.raises(CourseError, match="actions"):
        env.step(torch.tensor([0, 7]))
    with pytest.raises(CourseError, match="unknown environment"):
        make_env("mazes", 2)


def test_make_env_builds_the_chapter_envs():
    assert {"maze", "monster_gridworld", "coin_run"} <= set(COURSE_ENVS)
    for name, cls in (("maze", MazeEnv), ("monster_gridworld", MonsterGridworld), ("coin_run", CoinRunEnv)):
        env = make_env(name, 3, seed=0)
        assert isinstance(env, cls) and env.reset().shape == (3, env.obs_dim)


def test_gym_adapter_runs_the_maze():
    env = make_gym_env(seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (147,)
    for _ in range(50):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()


# ------------------------------------------------------------------ Monster Gridworld and CoinRun
def test_monster_gridworld_shields_and_hits():
    env = MonsterGridworld(1, size=3, n_apples=1, n_shields=1, n_monsters=1, chase=0.0, seed=0, auto_reset=False)
    env.agent[:] = [[1, 1]]
    env.apple[:] = False
    env.apple[0, 2, 2] = True
    env.shield[:] = False
    env.shield[0, 0, 1] = True
    env.monsters[:] = [[[2, 0]]]
    env.step_np(np.array([0]))   # up: picks the shield
    assert env.held[0] == 1 and env.stats["shields"][0] == 1
    env.monsters[:] = [[[0, 2]]]
    _, r, *_ = env.step_np(np.array([3]))   # right: into the monster, shielded
    assert env.held[0] == 0 and env.stats["hits"][0] == 0 and not env.alive[0, 0]
    with pytest.raises(CourseError, match="no space"):
        MonsterGridworld(1, size=3, n_apples=5, n_shields=5)


def test_monster_no_monsters_means_no_hits():
    out = monster_behaviour(UniformPolicy(), 64, n_monsters=0, max_steps=30, seed=0)
    assert (out["hits"] == 0).all() and out["apples"].sum() > 0


def test_coin_run_train_coin_at_the_end_and_test_anywhere():
    env = CoinRunEnv(200, seed=0)
    assert (env.coin[:, 1] == env.w - 1).all()
    test = CoinRunEnv(200, seed=0, coin="anywhere")
    assert (test.coin[:, 1] < test.w - 1).mean() > 0.6
    for i in range(20):
        assert bfs_distances(test.walls[i], test.agent[i])[tuple(test.coin[i])] > 0
    out = coinrun_behaviour(UniformPolicy(), 100, coin="anywhere", seed=0)
    assert not (out["success"] & out["reached_end"]).any()
    with pytest.raises(CourseError, match="height"):
        CoinRunEnv(2, height=1)


# ------------------------------------------------------------------ the policy and the analysis
def _policy(seed=0):
    torch.manual_seed(seed)
    return HookedConvPolicy((3, 7, 7), 4, channels=(8, 8), hidden=(32,)).eval()


def test_conv_policy_shapes_hooks_and_errors():
    p = _policy()
    obs = torch.from_numpy(encode(*(maze_layouts(5, seed=0)[k] for k in ("walls", "agent", "cheese"))))
    logits, value = p.forward_both(obs)
    assert logits.shape == (5, 4) and value.shape == (5,)
    _, cache = p.run_with_cache(obs)
    assert cache["convs.1.hook_post"].shape == (5, 8, 7, 7)
    with pytest.raises(CourseError, match="observations"):
        p(torch.zeros(5, 10))
    with pytest.raises(CourseError, match="unknown layer"):
        A.channel_patching(p, obs, obs, "convs.7.hook_post", torch.zeros(5), torch.ones(5))


def test_channel_patching_effects_sum_to_one_when_the_head_is_linear():
    """With conv.1 -> logits linear (ReLU and fc bypassed by a linear readout), per-channel
    effects add up: patching every channel moves the whole difference, so the effects sum to 1."""
    p = _policy(1)
    with torch.no_grad():
        p.layers[0].linear.bias.fill_(50.0)  # every fc unit active on these inputs: the readout from conv.1 is linear
    pairs = A.cheese_pairs(40, seed=0)
    eff = A.channel_patching(p, pairs["clean"], pairs["corrupt"], "convs.1.hook_post", pairs["a_clean"], pairs["a_corrupt"])
    assert eff.shape == (8,) and torch.isfinite(eff).all()
    assert float(eff.sum()) == pytest.approx(1.0, abs=2e-2)


def test_cheese_pairs_differ_only_in_cheese():
    pairs = A.cheese_pairs(30, seed=1)
    c, x = pairs["clean"].reshape(-1, 3, 7, 7), pairs["corrupt"].reshape(-1, 3, 7, 7)
    assert torch.equal(c[:, :2], x[:, :2]) and not torch.equal(c[:, 2], x[:, 2])
    assert (pairs["a_clean"] != pairs["a_corrupt"]).all()
    train = A.cheese_pairs(30, seed=1, cheese="train", sizes=(4,))
    env = MazeEnv(1, sizes=(4,), seed=0)
    grid = np.full(len(train["cheese_a"]), 7)
    assert env.in_region(train["cheese_a"], grid).all() and env.in_region(train["cheese_b"], grid).all()


def test_cheese_vector_shape_check_and_subtraction_removes_cheese_at_layer():
    p = _policy(2)
    lay = maze_layouts(6, seed=2, cheese="anywhere")
    v = A.cheese_vectors(p, lay["walls"], lay["agent"], lay["cheese"], "convs.0.hook_post")
    assert v.shape == (6, 8, 7, 7)
    # subtracting the cheese vector gives exactly the no-cheese activation at that layer (same agent square)
    with_c = torch.from_numpy(encode(lay["walls"], lay["agent"], lay["cheese"]))
    no_c = torch.from_numpy(encode(lay["walls"], lay["agent"], np.full((6, 2), -1)))
    steered = p.run_with_hooks(with_c, fwd_hooks=[("convs.0.hook_post", A.subtract_hook(v))])
    assert torch.allclose(steered, p(no_c), atol=1e-5)
    r = A.random_like(v, 0)
    assert torch.allclose(r.flatten(1).norm(dim=1), v.flatten(1).norm(dim=1), atol=1e-4)
    with pytest.raises(CourseError, match="shape"):
        A.steered_success(p, lay, "convs.0.hook_post", v[:, :4])


def test_retarget_hook_writes_only_the_target_square():
    p = _policy(3)
    lay = maze_layouts(4, seed=3)
    target = lay["agent"].copy()
    obs = torch.from_numpy(encode(lay["walls"], lay["agent"], lay["cheese"]))
    hook = A.retarget_hook([1, 2], target, 9.0)
    _, clean = p.run_with_cache(obs, names_filter=["convs.1.hook_post"])
    act = hook(clean["convs.1.hook_post"], None)
    diff = (act != clean["convs.1.hook_post"])
    assert diff[:, [0, 3, 4, 5, 6, 7]].sum() == 0
    assert (act[torch.arange(4), 1, target[:, 0], target[:, 1]] == 9.0).all()
    with pytest.raises(CourseError, match="channels must be"):
        A.retarget_rate(p, lay, "convs.1.hook_post", [99], target, 1.0)


def test_spearman_and_interval():
    assert A.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert A.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    rho, lo, hi = A.spearman_interval([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5])
    assert lo < rho < hi and -1 <= lo and hi <= 1
    with pytest.raises(CourseError, match="4 or more"):
        A.spearman_interval([1, 2, 3], [1, 2, 3])


def test_decision_squares_are_where_paths_diverge():
    d = A.decision_square_data(UniformPolicy(), 40, seed=0)
    for w, a, ch in zip(d["walls"][:10], d["agent"][:10], d["cheese"][:10]):
        assert not w[a[0], a[1]]
    assert np.allclose(d["p_cheese"], 0.25) and len(d["p_cheese"]) >= 10


def test_choice_regression_recovers_a_planted_effect():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    z = rng.normal(size=400)
    data = {"x": x, "z": z, "chooses_cheese": rng.random(400) < 1 / (1 + np.exp(-2 * x))}
    out = A.choice_regression(data, ["x", "z"], n_boot=100)
    assert out["x"][1] > 0.5 and out["z"][1] < 0 < out["z"][2]


def test_uniform_policy_behaviour_is_chance():
    out = maze_behaviour(UniformPolicy(), 200, cheese="train", seed=0)
    assert 0.0 < out["success"].mean() < 0.6


def test_bench_maze_prints_the_ratio():
    res = subprocess.run([sys.executable, "scripts/bench_maze.py", "--steps", "10", "--gym-steps", "100", "--repeats", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ratio batched / gymnasium" in res.stdout


# ------------------------------------------------------------------ issue 32: oracle, controls, estimators, agents
from utils.envs.maze import oracle_actions  # noqa: E402
from utils.goal_misgen import train as T  # noqa: E402
from utils.goal_misgen.behaviour import OraclePolicy  # noqa: E402


def test_oracle_actions_follow_the_shortest_path_and_the_oracle_always_arrives():
    lay = maze_layouts(30, seed=4, cheese="anywhere", **T.MAZE)
    for w, c in zip(lay["walls"], lay["cheese"]):
        lab, d = oracle_actions(w, c), bfs_distances(w, c)
        for r, col in np.argwhere(lab >= 0)[:20]:
            nr, nc = np.array([r, col]) + np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])[lab[r, col]]
            assert d[nr, nc] == d[r, col] - 1
        assert lab[c[0], c[1]] == -1 and (lab[w] == -1).all()
    side = lay["walls"].shape[-1]
    out = maze_behaviour(OraclePolicy((3, side, side)), 150, cheese="anywhere", seed=5, **T.MAZE)
    assert out["success"].all()
    # corner first happens to the oracle too, whenever the corner is on its way: geometry, not a goal
    assert 0.0 < out["corner_first"].mean() < 0.5


def test_coin_run_training_coin_is_always_collectable_and_the_oracle_collects_it():
    for mode in ("train", "anywhere"):
        out = coinrun_behaviour(OraclePolicy((3, 5, 10), coinrun=True), 200, coin=mode, seed=2, greedy=True)
        assert out["success"].all() and not out["reached_end"].any()
    assert T.coin_oracle(np.zeros((5, 10), bool), (4, 9))[4, 8] == 3     # step right onto the coin


def test_patch_channels_is_a_ratio_of_sums_and_random_baseline_draws_k_channels():
    p = _policy(5)
    pairs = A.cheese_pairs(30, seed=6)
    args = (p, pairs["clean"], pairs["corrupt"], "convs.1.hook_post", pairs["a_clean"], pairs["a_corrupt"])
    everything = A.patch_channels(*args, list(range(8)))
    assert everything == pytest.approx(1.0, abs=1e-4)         # every channel patched: the corrupt run
    assert A.patch_channels(*args, []) == pytest.approx(0.0, abs=1e-6)
    single = A.channel_patching(*args)
    assert float(single[3]) == pytest.approx(A.patch_channels(*args, [3]), abs=1e-6)
    base = A.random_channel_baseline(p, pairs, "convs.1.hook_post", k=2, n_draws=4, seed=0, exclude=[0, 1])
    assert base.shape == (4,) and np.isfinite(base).all()
    with pytest.raises(CourseError, match="random channels"):
        A.random_channel_baseline(p, pairs, "convs.1.hook_post", k=8, n_draws=1, exclude=[0])


def test_resampling_test_same_cheese_moves_nothing_when_channels_only_see_the_cheese():
    """A network whose chosen channel reads only the cheese channel: resampling it from a maze with the
    cheese on the same square changes nothing; from a maze with the cheese elsewhere it does."""
    p = _policy(6)
    with torch.no_grad():
        w = p.convs[0].conv.weight
        w[0].zero_()
        w[0, 2, 1, 1] = 3.0          # channel 0 of convs.0 = the cheese channel itself
        p.convs[0].conv.bias[0] = 0.0
    out = A.resampling_test(p, "convs.0.hook_post", [0], n=30, seed=1)
    assert out["same"].max() < 1e-6 and out["different"].mean() > 1e-3


def test_decision_square_steering_with_the_cheese_vector_equals_no_cheese():
    p = _policy(7)
    data = A.decision_square_data(p, 20, seed=3)
    v = A.cheese_vectors(p, data["walls"], data["agent"], data["cheese"], "convs.1.hook_post")
    steered = A.decision_square_steering(p, data, "convs.1.hook_post", v)
    no_cheese = torch.from_numpy(encode(data["walls"], data["agent"], np.full((len(v), 2), -1)))
    want = torch.softmax(p(no_cheese), -1).detach().numpy()[np.arange(len(v)), data["a_cheese_action"]]
    assert np.allclose(steered, want, atol=1e-5)
    assert np.allclose(A.decision_square_steering(p, data, "convs.1.hook_post", None), data["p_cheese"], atol=1e-6)


def test_within_level_ranks_remove_the_level():
    levels = ["a"] * 4 + ["b"] * 4
    x = [1, 2, 3, 4, 11, 12, 13, 14]          # the level alone orders the pooled values
    assert np.allclose(A.within_level_ranks(x, levels), [0, 1 / 3, 2 / 3, 1] * 2)
    assert A.spearman(A.within_level_ranks(x, levels), A.within_level_ranks(x[::-1], levels[::-1])) < 0


def test_internal_predictors_run_on_a_policy():
    p = _policy(8)
    lay = maze_layouts(40, seed=2, cheese="train")
    assert 0 <= A.cheese_channel_share(p, lay, "convs.1.hook_post")
    pairs = A.cheese_pairs(20, seed=2, cheese="train", sizes=(4,))
    assert np.isfinite(A.patching_mass(p, pairs, "convs.1.hook_post", 2))
    assert 0 <= A.probe_strength(p, "convs.1.hook_post", n=80, seed=0) <= 1


def test_agent_names_and_bad_checkpoints(tmp_path):
    assert T.parse_name("ch06_maze_r1_s2") == ("maze", {**T.MAZE, "rand_frac": 1.0}, 2)
    assert T.parse_name("ch06_coinrun_r1_s0")[1]["rand_frac"] == 1.0
    assert len(T.maze_names("r0")) >= 5 and len(T.maze_names("r01")) >= 5 and len(T.maze_names("r03")) >= 5
    for bad in ("ch06_maze_r2_s0", "ch07_maze_r0_s0", "ch06_coinrun_r0_s0"):
        with pytest.raises(CourseError, match="not a chapter-06 agent name"):
            T.parse_name(bad)
    with pytest.raises(CourseError, match="unknown environment"):
        T.train_agent("pong")


@pytest.mark.parametrize("name", [n for n in T.shipped_names() if "monster" not in n])
def test_shipped_agents_meet_the_competence_bar(name):
    env_id, kw, seed = T.parse_name(name)
    policy = T.load_agent(name)
    goal = "anywhere" if kw.get("rand_frac") == 1.0 else "train"
    kw = {k: v for k, v in kw.items() if k != "rand_frac"}
    rate = T.success_rate(env_id, policy, 200, seed=777, goal=goal, **kw)
    assert rate >= T.COMPETENCE_BAR - 0.03, f"{name}: {rate:.3f}"     # 200 episodes: allow sampling noise


def test_reflected_demonstrations_are_the_oracle_on_the_reflected_maze():
    """The anti-diagonal reflection (imitation data x2): the maze stays in the window's bottom-left
    with its top-right corner fixed, each reflected label is the oracle's action there, and
    reflecting twice gives the data back; a wrong action map is caught."""
    env = MazeEnv(1, seed=0, auto_reset=False, **T.MAZE)
    obs, acts, rets = T.oracle_dataset("maze", 30, seed=3, gamma=0.99, rand_frac=1.0, **T.MAZE)
    big, big_acts, big_rets = T.reflect_maze_data(obs, acts, rets, env.obs_shape)
    n, side = len(obs), env.side
    assert len(big) == 2 * n and torch.equal(big[:n], obs) and torch.equal(big_rets[n:], rets)
    wall = CHANNELS.index("walls")
    flipped = big[n:].reshape(n, *env.obs_shape)
    for k in range(0, n, 5):                  # the open squares keep their bounding box (the maze's place)
        before = np.argwhere(obs.reshape(n, *env.obs_shape)[k, wall].numpy() < 0.5)
        after = np.argwhere(flipped[k, wall].numpy() < 0.5)
        assert (before.min(0) == after.min(0)).all() and (before.max(0) == after.max(0)).all()
        assert before.max(0)[0] == side - 1 and before.min(0)[1] == 0          # bottom-left
    wrong = torch.tensor([1, 0, 3, 2])         # up <-> down, left <-> right: a mirror, not this reflection
    hits, misses = 0, 0
    for k in range(0, n, 7):
        x = flipped[k].numpy()
        walls = x[wall] > 0.5
        agent = np.argwhere(x[CHANNELS.index("agent")] > 0.5)[0]
        cheese = np.argwhere(x[CHANNELS.index("cheese")] > 0.5)[0]
        label = oracle_actions(walls, cheese)[agent[0], agent[1]]
        hits += label == big_acts[n + k].item()
        misses += label == wrong[acts[k]].item()
    assert hits == len(range(0, n, 7)) and misses < hits
    again = T.reflect_maze_data(big[n:], big_acts[n:], rets, env.obs_shape)
    assert torch.equal(again[0][n:], obs) and torch.equal(again[1][n:], acts)


def test_reflection_is_refused_outside_the_maze(monkeypatch):
    monkeypatch.setitem(T.BC_DEFAULTS, "coin_run", {**T.BC_DEFAULTS["coin_run"], "reflect": True})
    with pytest.raises(CourseError, match="maze only"):
        T.train_agent("coin_run", seed=0, env_kwargs=T.env_kwargs_for("coin_run"), progress=False)
