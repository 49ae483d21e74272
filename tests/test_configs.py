"""Every config class of the course is validated by the one validator (utils.core.check_fields):
a table of bad values per class, each failing before any work with a one-line CourseError."""
import math

import pytest

from utils.ad.train import TrainConfig as ADTrainConfig
from utils.brainscan.train import BrainScanConfig
from utils.core import CourseError
from utils.lm.models import LMConfig
from utils.models.ad_transformer import ADConfig
from utils.rl.a2c import A2CConfig
from utils.rl.dqn import DQNConfig
from utils.rl.ppo import PPOConfig
from utils.rl.qlearning import QLearningConfig
from utils.steering.autosteer import AutoSteerConfig
from utils.steering.crl import CRLConfig

INF, NAN = math.inf, math.nan


def _validate(cfg):
    for method in ("validate", "check"):
        if hasattr(cfg, method):
            return getattr(cfg, method)()
    return cfg  # validated in __post_init__


BAD = {
    PPOConfig: [dict(lr=INF), dict(lr=-1.0), dict(gamma=1.5), dict(ent_coef=-0.1), dict(seed=-1), dict(n_envs=0),
                dict(hidden=(0,)), dict(max_grad_norm=NAN), dict(device="gpu")],
    DQNConfig: [dict(lr=NAN), dict(tau=0.0), dict(seed=-2), dict(learning_starts=-1), dict(max_grad_norm=-1.0),
                dict(hidden=()), dict(batch_size=10**6)],
    A2CConfig: [dict(lr=INF), dict(entropy_coef=-0.01), dict(seed=-1), dict(gamma=2.0), dict(n_envs=0)],
    QLearningConfig: [dict(alpha=0.0), dict(alpha=1.5), dict(gamma=1.0), dict(q_init=NAN), dict(replay_sweeps=-1)],
    ADConfig: [dict(d_model=0), dict(n_heads=3), dict(seed=-1), dict(n_rewards=0)],
    ADTrainConfig: [dict(lr=INF), dict(weight_decay=-0.1), dict(warmup=-5), dict(steps=0), dict(seed=-1)],
    CRLConfig: [dict(hidden=(0,)), dict(ent_coef=-0.1), dict(max_grad_norm=-1.0), dict(lr=INF), dict(coef=NAN),
                dict(seed=-1), dict(mask="some")],
    AutoSteerConfig: [dict(lr=NAN), dict(coef=0.0), dict(seed=-1), dict(hidden=0)],
    BrainScanConfig: [dict(lr=INF), dict(temperature=NAN), dict(online_beta=-0.1), dict(num_generations=1),
                      dict(seed=-1), dict(max_grad_norm=0.0)],
    LMConfig: [dict(lr=INF), dict(weight_decay=-1.0), dict(offset_prob=1.5), dict(n_head=3), dict(warmup=-1)],
}
CASES = [pytest.param(cls, kw, id=f"{cls.__name__}-{next(iter(kw))}={next(iter(kw.values()))!r}")
         for cls, kws in BAD.items() for kw in kws]


@pytest.mark.parametrize("cls", list(BAD))
def test_defaults_are_valid(cls):
    _validate(cls())


@pytest.mark.parametrize("cls, kw", CASES)
def test_bad_value_fails_with_one_line(cls, kw):
    with pytest.raises(CourseError) as e:
        _validate(cls(**kw))
    assert "\n" not in str(e.value) and str(e.value)
