import pytest
import torch

from utils.core import CourseError
from utils.envs.cue_corridor import LEFT, LENGTH, RIGHT, CueCorridor, bayes_success, encode
from utils.rl.a2c import A2CConfig, a2c_loss, nstep_returns, train_cue_agent
from utils.rl.evaluate import corridor_random_success, evaluate_corridor


def test_encode_and_bad_input():
    obs = encode(torch.tensor([0, 6]), torch.tensor([1, 0]), length=7)
    assert obs.shape == (2, 15)
    assert obs[0, 0] == 1 and obs[0, 7 + 1] == 1 and obs[1, 6] == 1 and obs[1, 7] == 1
    assert encode(torch.tensor([0]), torch.tensor([1])).shape == (1, LENGTH + 2 + 6)
    with pytest.raises(CourseError):
        encode(torch.tensor([7]), torch.tensor([0]), length=7)
    with pytest.raises(CourseError):
        encode(torch.tensor([1]), torch.tensor([0]), cue_reading=torch.zeros(2, 2))
    with pytest.raises(CourseError):
        CueCorridor(2, cue_noise=-0.1)
    with pytest.raises(CourseError):
        encode(torch.tensor([1, 2]), torch.tensor([0]))
    with pytest.raises(CourseError):
        CueCorridor(0)
    with pytest.raises(CourseError):
        A2CConfig(lr=-1.0)
    with pytest.raises(CourseError):
        A2CConfig(n_envs=0)


def test_env_rewards():
    env = CueCorridor(2, seed=0)
    env.reset()
    env.pos[:] = torch.tensor([1, LENGTH - 2])
    env.cue[:] = torch.tensor([LEFT, LEFT])
    _, reward, term, trunc, info = env.step(torch.tensor([LEFT, RIGHT]))
    assert reward.tolist() == [1.0, -1.0] and term.tolist() == [True, True] and not trunc.any()
    assert info["success"].tolist() == [True, False] and info["episode_return"].tolist() == [1.0, -1.0]
    with pytest.raises(CourseError):
        env.step(torch.tensor([0, 2]))


def test_a2c_loss_matches_hand_computation():
    logps, ents = torch.tensor([[-0.5], [-1.0]]), torch.tensor([[0.6], [0.7]])
    values, returns = torch.tensor([[0.2], [0.4]]), torch.tensor([[1.0], [0.0]])
    adv = returns - values
    expected = -(logps * adv).mean() + 0.5 * adv.pow(2).mean() - 0.01 * ents.mean()
    assert torch.allclose(a2c_loss(logps, ents, values, returns, 0.01), expected)
    # n-step returns: bootstrap only through steps that did not end the episode
    r = nstep_returns([torch.tensor([0.0]), torch.tensor([1.0])], [torch.tensor([0.0]), torch.tensor([1.0])],
                      torch.tensor([5.0]), 0.9)
    assert torch.allclose(r, torch.tensor([[0.9], [1.0]]))


def test_agent_learns_and_beats_chance():
    policy, log = train_cue_agent(A2CConfig(iterations=80, seed=0), progress=False)
    best = bayes_success()
    rate = evaluate_corridor(policy, n_episodes=1000)["success"]
    # good but not perfect: near the best any policy can do, which the noisy cue keeps below 1
    assert 0.9 * best < rate < 0.95 and best < 0.95
    assert corridor_random_success(1000) < 0.5
    # with a clean cue the same agent would sit at the ceiling: the noise is what leaves headroom
    assert bayes_success(cue_noise=0.0) == 1.0


def test_noisy_cue_reading_is_fixed_per_episode_and_centred_on_the_cue():
    env = CueCorridor(4000, seed=1)
    obs = env.reset()
    reading = obs[:, LENGTH:LENGTH + 2]
    onehot = torch.nn.functional.one_hot(env.cue, 2).float()
    assert (reading - onehot).mean().abs() < 0.03 and abs(float((reading - onehot).std()) - 0.6) < 0.03
    obs2, *_ = env.step(torch.zeros(4000, dtype=torch.long))
    same = ~(env.t == 0)  # environments still in their first episode show the same reading
    assert torch.equal(obs2[same, LENGTH:LENGTH + 2], reading[same])
    # a clean cue is the one-hot itself
    clean = CueCorridor(8, seed=1, cue_noise=0.0)
    o = clean.reset()
    assert torch.equal(o[:, LENGTH:LENGTH + 2], torch.nn.functional.one_hot(clean.cue, 2).float())


def test_training_is_reproducible():
    a, _ = train_cue_agent(A2CConfig(iterations=5, seed=3), progress=False)
    b, _ = train_cue_agent(A2CConfig(iterations=5, seed=3), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_fixed_cue_flip_cue_and_random_walk_episodes():
    from utils.envs.cue_corridor import flip_cue, random_walk_episodes

    env = CueCorridor(16, seed=0, cue=LEFT)
    env.reset()
    for _ in range(15):
        env.step(torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(1)))
        assert (env.cue == LEFT).all()
    with pytest.raises(CourseError):
        CueCorridor(2, cue=2)
    # a fixed cue leaves positions and distractors as they would have been
    a, b = CueCorridor(8, seed=3), CueCorridor(8, seed=3, cue=RIGHT)
    oa, ob = a.reset(), b.reset()
    assert torch.equal(a.pos, b.pos) and torch.equal(oa[:, LENGTH + 2:], ob[:, LENGTH + 2:])

    obs = encode(torch.tensor([1, 4]), torch.tensor([LEFT, RIGHT]), length=7, noise=torch.randn(2, 6))
    before = obs.clone()
    flipped = flip_cue(obs, 7)
    assert torch.equal(obs, before)                              # the input is not modified
    assert flipped[:, 7:9].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert torch.equal(flipped[:, :7], obs[:, :7]) and torch.equal(flipped[:, 9:], obs[:, 9:])
    assert torch.equal(flip_cue(flipped, 7), obs)

    walk = random_walk_episodes(50, seed=0)
    n = len(walk["obs"])
    assert all(len(v) == n for v in walk.values()) and n > 50
    assert set(walk["episode"].tolist()) == set(range(50))
    # observations of one episode share its cue, and encode their own position
    for e in range(5):
        rows = walk["episode"] == e
        assert len(set(walk["cue"][rows].tolist())) == 1
    assert torch.equal(walk["obs"][:, :LENGTH].argmax(-1), walk["pos"])
    assert torch.equal(walk["obs"][:, LENGTH:LENGTH + 2].argmax(-1), walk["read"])
    # the reading favours the true cue in most, not all, episodes
    big = random_walk_episodes(1000, seed=1)
    assert 0.8 < float((big["read"] == big["cue"]).float().mean()) < 0.95


def test_patching_the_last_hidden_layer_is_an_identity():
    """Patching ALL of the layer the actor reads reproduces the clean logits exactly: the chapter
    reports it as a sanity check, not as a finding."""
    from utils.envs.cue_corridor import flip_cue
    from utils.interp.patching import fraction_recovered, patch_each_unit, patching_sweep, run_patched
    from utils.interp.hooks import hidden_units
    from utils.models.mlp_policy import HookedMLPPolicy

    torch.manual_seed(0)
    policy = HookedMLPPolicy(LENGTH + 8, 2, (8, 8))
    clean = encode(torch.tensor([1, 2, 3, 4]), torch.full((4,), RIGHT), noise=torch.randn(4, 6))
    corrupt = flip_cue(clean)
    src = hidden_units(policy, clean, 1)
    assert torch.allclose(run_patched(policy, corrupt, "layers.1.hook_post", src), policy(clean))
    metric = lambda lg: (lg[:, RIGHT] - lg[:, LEFT]).mean()  # noqa: E731
    whole = patching_sweep(policy, clean, corrupt, ["layers.1.hook_post"], metric)["layers.1.hook_post"]
    assert abs(float(whole) - 1.0) < 1e-5
    per_unit = patch_each_unit(policy, clean, corrupt, "layers.1.hook_post", metric)
    assert per_unit.shape == (8,)
    # the actor is linear in layer 1, so single-unit effects add up to the whole-layer effect
    assert abs(float(per_unit.sum()) - 1.0) < 1e-4
    assert fraction_recovered(3.0, 5.0, 1.0) == 0.5


def test_direction_and_control():
    from utils.interp.steering import direction_and_control

    acts = torch.randn(10, 5, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([True] * 3 + [False] * 7)
    state = torch.get_rng_state()
    d, c = direction_and_control(acts, mask, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.allclose(d, acts[:3].mean(0) - acts[3:].mean(0))
    assert torch.isclose(c.norm(), d.norm()) and torch.equal(c, direction_and_control(acts, mask, 1)[1])
