"""utils.dynamics: checkpoints over training, per-checkpoint metrics, comparisons between
networks and policy distillation (chapter 09). Identities and bad inputs live here, not in the
notebook."""
import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.dynamics import (action_agreement, collect_states, distil, distillation_loss, dormant_fraction,
                            effective_rank, fit_affine_map, inert_units, linear_cka, load_checkpoint,
                            load_checkpoints, log_spaced_checkpoints, match_units, onset, policy_entropy,
                            train_with_checkpoints, unit_ablation_effect, value_error, vestigial_units)
from utils.models.actor_critic import SeparateActorCritic
from utils.models.mlp_policy import HookedMLPPolicy
from utils.rl.ppo import PPOConfig, train_ppo

TINY = dict(env_id="colour_goal", total_steps=6 * 16 * 8, n_envs=16, n_steps=8, hidden=(8,))


def _net(seed=0, hidden=(8,), obs_dim=77, n_actions=4):
    torch.manual_seed(seed)
    return HookedMLPPolicy(obs_dim, n_actions, hidden)


def test_schedule_is_log_spaced_and_includes_both_ends():
    s = log_spaced_checkpoints(1000, 12)
    assert s[0] == 0 and s[-1] == 1000 and len(s) == 12 and s == sorted(set(s))
    assert s[1:5] == [1, 2, 4, 8]
    assert log_spaced_checkpoints(5, 10) == [0, 1, 2, 3, 4, 5]
    assert log_spaced_checkpoints(7, 2) == [0, 7]
    for bad in ((0, 5), (10, 1), (2.5, 4)):
        with pytest.raises(CourseError):
            log_spaced_checkpoints(*bad)


def test_checkpoints_follow_the_schedule_and_leave_training_unchanged():
    res, ckpts = train_with_checkpoints(PPOConfig(seed=1, **TINY), 4, progress=False)
    plain = train_ppo(PPOConfig(seed=1, **TINY), progress=False)
    assert [c.n_updates for c in ckpts] == log_spaced_checkpoints(6, 4)
    assert [c.env_steps for c in ckpts] == [c.n_updates * 128 for c in ckpts]
    for k, v in ckpts[-1].state_dict.items():
        assert torch.equal(v, plain.policy.state_dict()[k])
    models = load_checkpoints(ckpts, res.policy)
    assert not torch.equal(models[0].layers[0].linear.weight, models[-1].layers[0].linear.weight)


def test_separate_actor_critic_trains_with_ppo():
    torch.manual_seed(0)
    net = SeparateActorCritic(77, 4, (8,))
    res = train_ppo(PPOConfig(seed=0, **TINY), policy=net, progress=False)
    logits, value = res.policy.forward_both(torch.zeros(3, 77))
    assert logits.shape == (3, 4) and value.shape == (3,)
    _, cache = res.policy.critic.run_with_cache(torch.zeros(3, 77))
    assert "layers.0.hook_post" in cache   # the sub-networks keep their own hook names


def test_bad_checkpoints_are_one_line_errors():
    with pytest.raises(CourseError, match="empty"):
        load_checkpoints([], _net())
    with pytest.raises(CourseError, match="different architecture"):
        load_checkpoint(_net(hidden=(16,)).state_dict(), _net(hidden=(8,)))
    with pytest.raises(CourseError, match="different architecture"):
        load_checkpoint(_net().state_dict(), SeparateActorCritic(77, 4, (8,)))
    with pytest.raises(CourseError, match="no weights"):
        load_checkpoint({}, _net())


def test_student_with_another_action_space_is_refused():
    teacher = _net()
    states = torch.zeros(32, 77)
    with pytest.raises(CourseError, match="same action space"):
        distil(teacher, states, steps=1, student=_net(n_actions=3))
    with pytest.raises(CourseError, match="observations"):
        distil(teacher, torch.zeros(32, 10), steps=1)


def test_distillation_matches_the_teacher_on_its_states():
    teacher = _net(3, hidden=(16,))
    with torch.no_grad():
        teacher.actor.weight.mul_(5)
    data = collect_states(teacher, 2048, seed=0)
    assert data["obs"].shape == (2048, 77) and len(torch.unique(data["episode"])) > 64
    student, log = distil(teacher, data["obs"], hidden=(16,), steps=300, seed=0)
    assert log["loss"][-1] < log["loss"][0] / 3
    assert action_agreement(teacher(data["obs"]), student(data["obs"]))["agreement"] > 0.8
    student2, log2 = distil(teacher, data["obs"], hidden=(16,), steps=40, seed=0, dagger_rounds=1,
                            dagger_states=256)
    assert log2["n_states"] == [2048, 2048 + 256]


def test_distillation_loss_is_a_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g)
    assert float(distillation_loss(t, t)) == pytest.approx(0, abs=1e-6)
    assert float(distillation_loss(s, t)) > 0
    want = torch.nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1), log_target=True,
                                      reduction="batchmean")
    assert float(distillation_loss(s, t)) == pytest.approx(float(want), rel=1e-5)


def test_cka_identities():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(100, 6, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    assert linear_cka(X, X) == pytest.approx(1.0)
    assert linear_cka(X, 2 * X @ Q + 3) == pytest.approx(1.0)
    assert linear_cka(X, torch.ones(100, 3)) == 0.0
    assert 0 <= linear_cka(X, torch.randn(100, 4, generator=g)) < 0.3
    with pytest.raises(CourseError):
        linear_cka(X, X[:50])


def test_effective_rank_and_dormant_fraction():
    assert effective_rank(torch.eye(4)) == pytest.approx(4.0)
    assert effective_rank(torch.outer(torch.ones(3), torch.arange(1.0, 6))) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(3, 3)) == 0.0
    acts = torch.ones(10, 4)
    acts[:, 0] = 0.0
    assert dormant_fraction(acts) == 0.25
    assert dormant_fraction(torch.zeros(5, 3)) == 1.0


def test_match_units_recovers_a_permutation_with_signs():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(200, 5, generator=g)
    perm = torch.tensor([3, 0, 4, 1, 2])
    B = torch.empty(200, 5)
    B[:, perm] = A * torch.tensor([1.0, -2.0, 3.0, 1.0, -1.0])
    idx, r = match_units(A, B)
    assert torch.equal(idx, perm)
    assert torch.allclose(r, torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0]), atol=1e-5)


def test_affine_map_recovers_an_exact_relation():
    g = torch.Generator().manual_seed(3)
    src = torch.randn(80, 4, generator=g)
    W, b = torch.randn(4, 3, generator=g), torch.randn(3, generator=g)
    W_hat, b_hat = fit_affine_map(src, src @ W + b, ridge=1e-9)
    assert torch.allclose(W_hat, W, atol=1e-4) and torch.allclose(b_hat, b, atol=1e-4)


def test_ablation_effect_is_zero_for_constant_units_and_nonnegative():
    net = _net(4, hidden=(6,))
    with torch.no_grad():
        net.layers[0].linear.weight[2].zero_()
        net.layers[0].linear.bias[2] = 0.7
    states = torch.rand(30, 77)
    eff = unit_ablation_effect(net, "layers.0.hook_post", states)
    assert eff.shape == (6,) and (eff >= 0).all() and float(eff[2]) == pytest.approx(0.0, abs=1e-7)


def test_onset_vestigial_and_inert():
    assert onset([1, 10, 100, 1000], [0, 0, 1, 1]) == pytest.approx(55.0)
    assert onset([1, 10, 100], [2, 1, 0]) == pytest.approx(10.0)
    assert np.isnan(onset([1, 2, 3], [1, 1, 1]))
    effects = torch.tensor([[1.0, 0.2, 0.9], [0.05, 1.0, 0.9]])
    var = torch.tensor([1.0, 1.0, 1.0])
    assert vestigial_units(effects, var).tolist() == [True, False, False]
    assert inert_units(effects[-1], var).tolist() == [True, False, False]
    with pytest.raises(CourseError):
        vestigial_units(effects[:1], var)


def test_policy_entropy_and_value_error_ranges():
    net = _net(5)
    assert 0 <= policy_entropy(net, torch.rand(20, 77)) <= np.log(4) + 1e-6
    out = value_error(net, n_states=16, repeats=2, seed=0)
    assert out["mae"] >= 0 and set(out) == {"mae", "explained_variance"}


# ---------------------------------------------------------------- issue 34: competence gating, nulls, resolution
from utils.dynamics import metrics as M  # noqa: E402
from utils.dynamics.cloning import fresh_copy  # noqa: E402
from utils.envs.colour_goal import cue_pairs  # noqa: E402


def test_first_competent_uses_the_wilson_lower_end():
    chance = 0.2
    assert M.first_competent([0.19, 0.21, 0.25, 0.6, 0.9], chance, 2000) == 2  # 0.21 of 2000: lower end < 0.2
    assert M.first_competent([0.1, 0.15], chance, 2000) is None
    assert M.first_competent([0.3, 0.9], chance, 10) == 1          # 3 of 10 is not above 0.2 with 10 episodes
    with pytest.raises(CourseError):
        M.first_competent([[0.1]], chance, 10)


def test_count_vestigial_ignores_checkpoints_before_competence():
    # unit 0 strong only at checkpoint 0 (before competence), unit 1 strong at 2 then inert, unit 2 causal
    effects = torch.tensor([[1.0, 0.0, 0.2], [0.0, 0.1, 1.0], [0.0, 1.0, 0.9], [0.0, 0.01, 1.0]])
    var = torch.ones(3)
    assert M.count_vestigial(effects, var, start=0) == 2
    assert M.count_vestigial(effects, var, start=1) == 1
    assert M.count_vestigial(effects, var, start=3) == 0 and M.count_vestigial(effects, var, start=None) == 0


def test_onset_verdict_reads_at_the_checkpoint_resolution():
    assert M.onset_verdict([-0.5, -0.6, -0.55], 0.23)[1] == "held"
    # the old chapter's "moves first" (-0.10 [-0.18, -0.03]) is inside one spacing of 0.23
    assert M.onset_verdict([-0.1, -0.18, -0.03], 0.23)[1] == "within one checkpoint spacing (TOST)"
    assert M.onset_verdict([0.5, 0.6, 0.55], 0.23)[1].startswith("reversed")
    assert M.onset_verdict([-0.5, 0.6, 0.1], 0.23)[1] == "not separated"
    assert M.onset_verdict([-0.5], 0.23)[1] == "one seed, untested"
    with pytest.raises(CourseError):
        M.onset_verdict([0.1, 0.2], 0.0)


def test_circuit_share_is_the_units_share_of_the_layer():
    e = torch.tensor([3.0, 1.0, 0.0, 0.0])
    assert M.circuit_share(e, [0]) == pytest.approx(0.75)
    assert M.circuit_share(torch.ones(8), [0, 1]) == pytest.approx(0.25)
    assert np.isnan(M.circuit_share(torch.zeros(4), [0]))


def test_value_ablation_effect_is_zero_for_units_the_critic_does_not_read():
    net = _net(3, hidden=(6,))
    with torch.no_grad():
        net.critic.weight[:, 2] = 0.0
    states = torch.randn(64, 77, generator=torch.Generator().manual_seed(0))
    eff = M.value_ablation_effect(net, "layers.0.hook_post", states)
    assert eff.shape == (6,) and float(eff[2]) == 0.0 and float(eff.max()) > 0
    with pytest.raises(CourseError):
        M.value_ablation_effect(HookedMLPPolicy(77, 4, (6,), value_head=False), "layers.0.hook_post", states)


def test_clone_circuit_in_an_identical_teacher_is_the_teachers_own_top_units():
    """A clone that IS the teacher: the matched units are its own top-k, so the matched recovery equals
    held-out top-k patching, and beats random units of the same number."""
    teacher = _net(5, hidden=(16, 16))
    pairs = cue_pairs(teacher, 400, seed=1)
    res = M.clone_circuit_in_teacher(teacher, teacher, pairs, "layers.0.hook_post", k=4, seed=0, n_random=10)
    assert sorted(res["clone_units"].tolist()) == res["teacher_units"].tolist()
    top = M.heldout_topk_recovery(teacher, pairs, "layers.0.hook_post", k=4, seed=0)[0]
    assert res["matched"] == pytest.approx(top, abs=1e-6)
    assert res["matched"] > res["random"]
    rnd = M.random_units_recovery(teacher, pairs, "layers.0.hook_post", k=4, seed=0, n_sets=3)
    assert -1 < rnd < res["matched"]


def test_distil_leaves_the_global_rng_alone_and_keeps_its_history():
    teacher = _net(2)
    states = torch.randn(256, 77, generator=torch.Generator().manual_seed(1))
    before = torch.get_rng_state()
    s1, log = distil(teacher, states, hidden=(8,), steps=20, seed=4, checkpoint_steps=[0, 5, 20])
    assert torch.equal(before, torch.get_rng_state())
    s2, _ = distil(teacher, states, hidden=(8,), steps=20, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(s1.state_dict().values(), s2.state_dict().values()))
    assert [step for step, _ in log["checkpoints"]] == [0, 5, 20]
    assert not torch.equal(log["checkpoints"][0][1]["layers.0.linear.weight"], s1.layers[0].linear.weight)


def test_cloning_works_on_another_course_environment_and_architecture():
    """The protocol, not the colour-goal gridworld: a conv policy on the maze, student = fresh copy."""
    from utils.envs import make_env
    from utils.models.conv_policy import HookedConvPolicy

    env = make_env("maze", 4, seed=0)
    obs = env.reset(seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = HookedConvPolicy((3, 7, 7), 4, (4, 4), (16,))
    assert obs.shape[1] == teacher.obs_dim
    data = collect_states(teacher, 256, seed=1, env="maze", n_envs=16)
    assert set(data) == {"obs", "episode"} and data["obs"].shape == (256, teacher.obs_dim)
    student, log = distil(teacher, data["obs"], steps=30, seed=0, dagger_rounds=1, dagger_states=64, env="maze")
    assert isinstance(student, HookedConvPolicy) and log["n_states"] == [256, 320]
    a, b = fresh_copy(teacher, 3), fresh_copy(teacher, 3)
    assert torch.equal(a.fc.weight if hasattr(a, "fc") else next(a.parameters()),
                       b.fc.weight if hasattr(b, "fc") else next(b.parameters()))
    assert not torch.equal(next(a.parameters()), next(teacher.parameters()))
    with pytest.raises(CourseError):
        collect_states(teacher, 256, env=42)


def test_planted_hint_reads_the_goal_direction_and_the_switch_removes_it():
    from utils.dynamics.planted import HintedMLPPolicy, PhaseSwitch, goal_hint, layout_hash
    from utils.envs.colour_goal import ColourGoalGrid, gridworld_features

    env = ColourGoalGrid(256, seed=3)
    obs = torch.from_numpy(env.observe_np())
    feats = gridworld_features(env.agent, env.tiles, env.goal)
    hint = goal_hint(obs)
    assert torch.equal(hint > 0, feats["goal is left of agent"].bool())
    h = layout_hash(obs)
    assert set(h.unique().tolist()) <= {-1.0, 0.0, 1.0} and len(h.unique()) == 3
    assert abs(float(torch.corrcoef(torch.stack([h, hint]))[0, 1])) < 0.3     # carries no direction
    net = HintedMLPPolicy(77, 4, (8, 8))
    assert net.obs_dim == 77 and net.layers[0].linear.in_features == 78
    _, cache = net.run_with_cache(obs)
    assert cache["layers.0.hook_post"].shape == (256, 8) and cache["hook_obs"].shape == (256, 78)
    assert torch.equal(cache["hook_obs"][:, -1], hint)
    seen = []
    switch = PhaseSwitch(3, lambda n, p, log: seen.append((n, p.phase)))
    for n in range(5):
        switch(n, net, {})
    assert seen == [(0, "hint"), (1, "hint"), (2, "hint"), (3, "noise"), (4, "noise")]
    with pytest.raises(CourseError):
        net.set_phase("off")
