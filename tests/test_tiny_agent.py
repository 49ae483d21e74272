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
