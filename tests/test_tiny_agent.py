import pytest
import torch

from utils.core import CourseError
from utils.tiny_agent import LEFT, RIGHT, CueCorridor, TrainConfig, encode, evaluate, random_policy_success, train_cue_agent


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
        TrainConfig(lr=-1.0)
    with pytest.raises(CourseError):
        TrainConfig(n_envs=0)


def test_env_rewards():
    env = CueCorridor(2, seed=0)
    env.pos[:] = torch.tensor([1, 5])
    env.cue[:] = torch.tensor([LEFT, LEFT])
    reward, done, _ = env.step(torch.tensor([LEFT, RIGHT]))
    assert reward.tolist() == [1.0, -1.0] and done.tolist() == [True, True]


def test_agent_learns_and_beats_chance():
    policy, log = train_cue_agent(TrainConfig(iterations=80, seed=0), progress=False)
    assert evaluate(policy, n_episodes=300)["success"] > 0.95
    assert random_policy_success(1000) < 0.7


def test_training_is_reproducible():
    a, _ = train_cue_agent(TrainConfig(iterations=5, seed=3), progress=False)
    b, _ = train_cue_agent(TrainConfig(iterations=5, seed=3), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
