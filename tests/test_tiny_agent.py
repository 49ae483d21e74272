import pytest
import torch

from utils.core import CourseError
from utils.envs.cue_corridor import LEFT, RIGHT, CueCorridor, encode
from utils.rl.a2c import A2CConfig, a2c_loss, nstep_returns, train_cue_agent
from utils.rl.evaluate import corridor_random_success, evaluate_corridor


def test_encode_and_bad_input():
    obs = encode(torch.tensor([0, 6]), torch.tensor([1, 0]))
    assert obs.shape == (2, 15)
    assert obs[0, 0] == 1 and obs[0, 7 + 1] == 1 and obs[1, 6] == 1 and obs[1, 7] == 1
    with pytest.raises(CourseError):
        encode(torch.tensor([7]), torch.tensor([0]))
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
    env.pos[:] = torch.tensor([1, 5])
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
    assert evaluate_corridor(policy, n_episodes=300)["success"] > 0.95
    assert corridor_random_success(1000) < 0.7


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
    assert torch.equal(a.pos, b.pos) and torch.equal(oa[:, 9:], ob[:, 9:])

    obs = encode(torch.tensor([1, 4]), torch.tensor([LEFT, RIGHT]), noise=torch.randn(2, 6))
    before = obs.clone()
    flipped = flip_cue(obs)
    assert torch.equal(obs, before)                              # the input is not modified
    assert flipped[:, 7:9].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert torch.equal(flipped[:, :7], obs[:, :7]) and torch.equal(flipped[:, 9:], obs[:, 9:])
    assert torch.equal(flip_cue(flipped), obs)

    walk = random_walk_episodes(50, seed=0)
    n = len(walk["obs"])
    assert all(len(v) == n for v in walk.values()) and n > 50
    assert set(walk["episode"].tolist()) == set(range(50))
    # observations of one episode share its cue, and encode their own position
    for e in range(5):
        rows = walk["episode"] == e
        assert len(set(walk["cue"][rows].tolist())) == 1
    assert torch.equal(walk["obs"][:, :7].argmax(-1), walk["pos"])
    assert torch.equal(walk["obs"][:, 7:9].argmax(-1), walk["cue"])


def test_patching_the_last_hidden_layer_is_an_identity():
    """Patching ALL of the layer the actor reads reproduces the clean logits exactly: the chapter
    reports it as a sanity check, not as a finding."""
    from utils.envs.cue_corridor import flip_cue
    from utils.interp.patching import fraction_recovered, patch_each_unit, patching_sweep, run_patched
    from utils.interp.hooks import hidden_units
    from utils.models.mlp_policy import HookedMLPPolicy

    torch.manual_seed(0)
    policy = HookedMLPPolicy(15, 2, (8, 8))
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
