"""Chapter 11: batched MinAtar (vectorised Breakout matches MinAtar frame for frame), the conv
policy, ale-py Pong's errors, attribution, interventions and subspace patching, shipped agents."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.envs import make_env
from utils.envs.minatar import MinAtarBatch, VecBreakout, check_frame, make_minatar, random_policy_returns
from utils.models.conv_policy import HookedConvPolicy
from utils.vision_agents import interp as I
from utils.vision_agents.games import breakout_variables, frames, landing_column, move_ball, move_paddle


def _sync(v: VecBreakout, s) -> None:
    v.set_state(dict(ball_x=[s.ball_x], ball_y=[s.ball_y], ball_dir=[s.ball_dir], last_x=[s.last_x], last_y=[s.last_y],
                     pos=[s.pos], bricks=s.brick_map[None] > 0, strike=[s.strike]))


def test_vec_breakout_matches_minatar_frame_for_frame():
    from minatar import Environment
    e = Environment("breakout", sticky_action_prob=0.0)
    e.seed(3)
    e.reset()
    v = VecBreakout(1, sticky_action_prob=0.0, auto_reset=False)
    v.reset()
    _sync(v, e.env)
    rng = np.random.default_rng(0)
    total, refills, episodes = 0.0, 0, 0
    for _ in range(2500):
        s = e.env
        land = landing_column(np.array([s.ball_x]), np.array([s.ball_y]), np.array([s.ball_dir]))[0]
        goal = land if land >= 0 else s.ball_x
        a = int(rng.integers(3)) if rng.random() < 0.1 else (1 if goal < s.pos else 2 if goal > s.pos else 0)
        before = int(s.brick_map.sum())
        r, done = e.act([0, 1, 3][a])
        refills += int(s.brick_map.sum() > before)
        _, r2, term, _, info = v.step(torch.tensor([a]))
        want = e.state().transpose(2, 0, 1).reshape(-1).astype(np.float32)
        assert np.array_equal(want, info["final_obs"][0].numpy())
        assert r == r2.item() and done == bool(term[0])
        total += r
        if done:
            episodes += 1
            e.reset()
            v.reset()
            _sync(v, e.env)
    assert total > 30  # the comparison covered many brick hits


def test_batches_reproduce_and_auto_reset():
    for env in (VecBreakout(8, seed=1), MinAtarBatch("breakout", 8, seed=1)):
        a = torch.randint(0, 3, (40, 8), generator=torch.Generator().manual_seed(0))
        runs = []
        for _ in range(2):
            obs = [env.reset(seed=5)]
            for t in range(40):
                o, r, term, trunc, info = env.step(a[t])
                obs.append(o)
                if term.any():
                    assert (info["final_obs"][term] != o[term]).any()
            runs.append(torch.stack(obs))
        assert torch.equal(runs[0], runs[1])
    env = make_env("minatar-space_invaders", 4, seed=0)
    assert env.reset().shape == (4, 600) and env.n_actions == 4
    assert make_env("minatar-breakout", 2).obs_shape == (4, 10, 10)


def test_random_policy_is_the_floor_and_truncation():
    env = VecBreakout(16, seed=0, max_steps=50)
    r = random_policy_returns(env, 40)
    assert r.shape == (40,) and 0 <= r.mean() < 2


def test_bad_input_one_line_errors():
    with pytest.raises(CourseError, match="unknown MinAtar game"):
        make_minatar("pacman", 2)
    with pytest.raises(CourseError, match="shape"):
        check_frame(torch.zeros(3, 5, 10, 10), 4)
    with pytest.raises(CourseError, match="sticky_action_prob"):
        VecBreakout(2, sticky_action_prob=1.5)
    with pytest.raises(CourseError, match="actions"):
        VecBreakout(2).step(torch.tensor([0, 3]))
    from utils.envs.atari import check_rom, preprocess
    with pytest.raises(CourseError, match="no ROM"):
        check_rom("zork")
    assert check_rom("pong").endswith("pong.bin")
    with pytest.raises(CourseError, match="210, 160, 3"):
        preprocess(np.zeros((84, 84, 3), np.uint8))
    net = HookedConvPolicy((4, 10, 10), 3)
    with pytest.raises(CourseError, match="observations must have shape"):
        net(torch.zeros(2, 300))
    with pytest.raises(CourseError, match="unknown agent"):
        from utils.vision_agents.agents import load_agent
        load_agent("pong_ppo")


def test_game_variables_and_interventions():
    env = VecBreakout(32, seed=0, sticky_action_prob=0.0)
    env.reset()
    for _ in range(30):  # the landing column predicts where a falling ball reaches row 9
        st = env.get_state()
        v = breakout_variables(st)
        _, _, term, _, info = env.step(torch.zeros(32, dtype=torch.long))
    st = env.get_state()
    moved, ok = move_ball(st, 2)
    assert (moved["ball_x"][ok] == st["ball_x"][ok] + 2).all() and (moved["ball_dir"] == st["ball_dir"]).all()
    moved, ok = move_paddle(st, -9)
    assert ok.sum() == (st["pos"] == 9).sum()
    assert torch.equal(frames(st), env._obs() if isinstance(env._obs(), torch.Tensor) else torch.as_tensor(env._obs()))
    falling = np.array([2, 3, 2])
    assert landing_column(np.array([0, 0, 8]), np.array([4, 4, 4]), falling).tolist() == [5, 4, 6]
    assert v["target"].min() >= -1 and v["target"].max() <= 2


def test_attribution_and_patching_on_a_small_net():
    torch.manual_seed(0)
    net = HookedConvPolicy((4, 10, 10), 3, channels=(4, 4), hidden=(8,)).eval()
    env = VecBreakout(16, seed=0)
    env.reset()
    for _ in range(5):
        env.step(torch.randint(0, 3, (16,)))
    st = env.get_state()
    obs = frames(st)
    a = net(obs).argmax(-1)
    ig = I.integrated_gradients(net, obs, a, steps=64)
    gap = I.centred_logit(net(obs), a) - I.centred_logit(net(torch.zeros_like(obs)), a)
    assert torch.allclose(ig.flatten(1).sum(1), gap, atol=2e-3)  # completeness
    gx = I.gradient_x_input(net, obs, a)
    assert gx.shape == (16, 4, 10, 10) and (gx[obs.view(16, 4, 10, 10) == 0] == 0).all()
    att = I.object_attribution(gx, st)
    assert set(att) == set(I.OBJECTS)
    eff = I.intervention_effects(net, st)
    assert all((e[torch.isfinite(e)] >= 0).all() for e in eff.values())
    acts = torch.randn(60, 12)
    labels = np.repeat([0, 1, 2], 20)
    q = I.class_mean_subspace(acts, labels)
    assert q.shape == (12, 2) and torch.allclose(q.T @ q, torch.eye(2), atol=1e-5)
    # a subspace patch with a full basis is the whole patch: it recovers everything
    pairs = {"clean": obs[:8], "corrupt": obs[8:], "a_clean": net(obs[:8]).argmax(-1), "a_corrupt": (net(obs[:8]).argmax(-1) + 1) % 3}
    rows = I.subspace_patching(net, pairs, {"layers.0.hook_post": {"all": torch.eye(8)}}, n_random=1, n_boot=100)
    assert abs(rows[0]["recovered"] - 1) < 1e-4
    with pytest.raises(CourseError):
        I.object_attribution(gx[:, :3], st)


def test_spearman_rows():
    a = np.array([1.0, 2, 3, 4])
    assert I.spearman_rows(a, a * 2) == pytest.approx(1.0)
    assert I.spearman_rows(a, -a) == pytest.approx(-1.0)


def test_spearman_rows_averages_ties_and_its_bootstrap_contains_the_estimate():
    """Ties get their average rank (scipy's Spearman); breaking them by order made a bootstrap
    resample's repeated rows look correlated, and the estimate fell outside its own interval."""
    from scipy.stats import spearmanr
    from utils.stats import bootstrap_statistic
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=200), 0)          # heavy ties, as attribution on few objects has
    e = np.round(rng.normal(size=200), 0)          # independent of a: the true correlation is 0
    assert I.spearman_rows(a, e) == pytest.approx(spearmanr(a, e)[0], abs=1e-9)
    r, lo, hi = bootstrap_statistic(lambda x, y: I.spearman_rows(x, y), a, e, n_boot=1000, seed=0)
    assert lo <= r <= hi and lo < 0 < hi


def test_shipped_agents_load_and_beat_random():
    from utils.vision_agents.agents import SEEDS, evaluate_returns, load_agent, make_agent_env
    env = make_agent_env("breakout_ppo", 16, seed=7)
    floor = random_policy_returns(env, 32, seed=7).mean()
    for name in ("breakout_ppo", "breakout_dqn"):
        net = load_agent(name, SEEDS[0])
        assert evaluate_returns(net, env, 16, greedy=name.endswith("dqn"), seed=7).mean() > floor + 1.5


# ---------------------------------------------------------------- issue 37: controls, saliency, Acrobot, hub
def test_blur_saliency_and_its_region_check_on_a_planted_network():
    """A network that reads only cell (4, 6) of the ball channel: blur saliency peaks there, and
    blurring its top cells moves the policy more than random cells of equal area."""
    from utils.vision_agents.agents import build_network
    net = build_network("breakout_ppo", seed=0)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    x = torch.zeros(8, 4, 10, 10)
    x[:, 1, 4, 6] = 1.0
    x[:, 0, 9, 2] = 1.0

    class Planted(torch.nn.Module):
        obs_shape = (4, 10, 10)

        def forward(self, obs):
            o = obs.view(-1, 4, 10, 10)
            return torch.stack([torch.zeros(len(o)), 4 * o[:, 1, 4, 6], -4 * o[:, 1, 4, 6]], 1)

    planted = Planted()
    s = I.blur_saliency(planted, x.flatten(1))
    assert s.shape == (8, 10, 10) and int(s[0].flatten().argmax()) == 4 * 10 + 6
    tv = I.region_effects(planted, x.flatten(1), {"blur": s}, k=3, seed=0)
    assert set(tv) == {"blur", "random cells", "random occupied cells"}
    assert float(tv["blur"].mean()) > float(tv["random cells"].mean()) + 0.1
    assert I.spatial(torch.ones(2, 4, 10, 10)).shape == (2, 10, 10)
    assert I.per_channel(s).shape == (8, 4, 10, 10)
    with pytest.raises(CourseError):
        I.gaussian_blur(x, 0.0)


def test_paired_controls_verdict_and_patching_bases_have_equal_rank():
    v, failed, diffs = I.paired_controls_verdict([0.5, 0.6, 0.55], {"a": [0.1, 0.2, 0.15], "b": [0.5, 0.62, 0.5]})
    assert v == "not separated" and failed == ["b"] and diffs["a"][1] > 0
    assert I.paired_controls_verdict([0.5, 0.6, 0.55], {"a": [0.1, 0.2, 0.15]})[0] == "held"
    assert I.paired_controls_verdict([0.5], {"a": [0.1]})[0] == "one seed, untested"
    g = torch.Generator().manual_seed(0)
    acts = {"l": torch.randn(90, 5, generator=g)}
    target = np.repeat([0, 1, 2], 30)
    bases = I.patching_bases(acts, target, np.arange(90) % 7, seed=0)
    assert set(bases["l"]) == {"target", "shuffled labels", I.PADDLE_X, "variance-matched random",
                               "top principal components"}
    assert {q.shape for q in bases["l"].values()} == {(5, 2)}
    assert np.bincount(I.terciles(np.arange(30.0))).tolist() == [10, 10, 10]


def test_acrobot_energy_labels_and_steering():
    from utils.vision_agents import acrobot as A
    from utils.vision_agents.agents import load_agent
    hang = np.array([[1.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    up = np.array([[-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    low = -(A.M1 * A.LC1 + A.M2 * (A.L1 + A.LC2)) * A.G
    assert A.acrobot_energy(hang)[0] == pytest.approx(low) and A.acrobot_energy(up)[0] == pytest.approx(-low)
    assert A.acrobot_energy(np.array([[1.0, 0, 1, 0, 1.0, 0]]))[0] > low      # motion adds kinetic energy
    with pytest.raises(CourseError, match="6"):
        A.acrobot_energy(np.zeros((2, 4)))
    net = load_agent("acrobot_ppo", 0)
    d = A.collect_acrobot(net, 2, 40, seed=0)
    assert d["obs"].shape == (80, 6) and len(d["episode"]) == 80
    lab = A.acrobot_labels(d["obs"])
    assert set(lab) == set(A.VARIABLES) and set(np.unique(lab["energy"])) == {0, 1, 2}
    u = A.mean_difference(torch.randn(80, 64), lab["w2 sign"])
    assert u.shape == (64,) and A.rescaled(u, 2.0).norm() == pytest.approx(2.0, rel=1e-4)
    assert A.steering_effect(net, d["obs"], "layers.1.hook_post", torch.zeros(64)) == 0.0


def test_atari_hub_agents_load_offline_from_fixtures_play_and_are_interpreted(tmp_path, monkeypatch):
    """Both released Breakout agents from random-weight fixtures at full shape in the hub's cache layout:
    they load (CleanRL's state dict into the course's QNetwork, the RL Zoo zip through SB3), play a few
    steps of ale-py Breakout with the agents' wrappers, and run one saliency and one probe call; offline
    without the files the loader stops in one line naming the fixture."""
    import huggingface_hub.constants as hc

    from utils.interp.probes import probe_with_controls
    from utils.vision_agents import atari_hub as AH

    summary = AH.write_atari_fixtures(tmp_path / "hub")
    assert set(summary["files"]) == {AH.DQN_REPO, AH.PPO_REPO}
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    torch.set_num_threads(1)
    for kind in ("dqn", "ppo"):
        hub = AH.load_atari_agent(kind)
        assert hub.is_fixture and hub.card_return is None
        if kind == "dqn":
            assert isinstance(hub.net, AH.QNetwork) and sum(p.numel() for p in hub.net.parameters()) == 1_686_180
        rec = AH.play(hub.agent, 1, seed=0, max_steps=24, record=24)
        assert rec["obs"].shape == (24, 4, 84, 84) and rec["obs"].dtype == torch.uint8
        assert set(rec["vars"]) == set(AH.RAM) and len(np.unique(rec["episode"])) >= 4
        x = rec["obs"][:1].float()
        with torch.no_grad():
            assert hub.agent(x).shape == (1, 4)
        s = AH.blur_saliency_atari(hub.agent, x, stride=12)
        assert s.shape == (1, 84, 84) and torch.isfinite(s).all()
        acts = AH.cache_activations_batched(hub.agent, rec["obs"].float(), AH.DENSE[kind])
        assert acts.shape == (24, 512)
        row = probe_with_controls(acts, torch.as_tensor(I.terciles(rec["vars"]["paddle_x"])), acts,
                                  groups=rec["episode"], seed=0)
        assert 0.0 <= row["probe"] <= 1.0
    # the chapter's whole analysis on the last agent; a random-weight fixture's greedy action hardly
    # changes, so the test hands it alternating actions to exercise the patching path too
    monkeypatch.setattr(AH, "greedy_actions", lambda agent, obs: torch.arange(len(obs)) % 2)
    found = AH.interpret_atari(hub, rec, seed=0, n_saliency=1, n_boot=100)
    assert set(found["patching"]) == {"ball x", "shuffled labels", "nuisance: paddle x", "variance-matched random",
                                      "top principal components"}
    assert found["probes"]["ball_x"]["n_test_groups"] >= 1 and "random square" in found["saliency"]
    assert AH.model_card_return("  - type: mean_reward\n    value: 398.00 +/- 16.30\n") == (398.0, 16.3)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CourseError, match="HF_HUB_OFFLINE is set") as e:
        AH.load_atari_agent("dqn")
    assert "\n" not in str(e.value) and "write_atari_fixtures" in str(e.value)
    with pytest.raises(CourseError, match="kind"):
        AH.load_atari_agent("a2c")
