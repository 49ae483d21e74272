import random

import numpy as np
import pytest
import torch

from utils.core import CourseError, default_profile, get_device, select_profile, set_seed


def test_get_device_is_cpu_without_cuda():
    if not torch.cuda.is_available():
        assert get_device().type in ("cpu", "mps")
        with pytest.raises(CourseError, match="CUDA is not available"):
            get_device("cuda")
    assert get_device("cpu") == torch.device("cpu")


def test_set_seed_reproduces_python_numpy_torch():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist(), torch.nn.Linear(4, 2).weight.sum().item()

    set_seed(123)
    a = draw()
    set_seed(123)
    b = draw()
    set_seed(124)
    c = draw()
    assert a == b
    assert a != c


def test_set_seed_rejects_bad_seed():
    with pytest.raises(CourseError):
        set_seed(-1)
    with pytest.raises(CourseError):
        set_seed("7")


def test_default_profile(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    assert default_profile() == "cpu"
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(CourseError, match="not a profile"):
        default_profile()
    monkeypatch.delenv("COURSE_PROFILE")
    assert default_profile() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_select_profile():
    sizes = {"smoke": {"n": 1}, "cpu": {"n": 2}, "gpu": {"n": 3}}
    assert select_profile(sizes, "cpu") == {"n": 2}
    with pytest.raises(CourseError, match="unknown profile"):
        select_profile(sizes, "tpu")
    with pytest.raises(CourseError, match="lacks profile"):
        select_profile({"smoke": {}, "cpu": {}}, "cpu")
    with pytest.raises(CourseError, match="same keys"):
        select_profile({"smoke": {"n": 1}, "cpu": {"m": 2}, "gpu": {"n": 3}}, "cpu")


def test_torch_threads_restores():
    from utils.core import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_check_fields():
    from dataclasses import dataclass

    from utils.core import check_fields

    @dataclass
    class Cfg:
        n: int = 2
        lr: float = 0.1
        gamma: float = 0.9
        coef: float = 0.0

    check_fields(Cfg(), positive_int=("n",), positive=("lr",), unit=("gamma",), nonneg=("coef",))
    for bad, msg in [(Cfg(n=0), "Cfg.n must be a positive int"), (Cfg(n=True), "positive int"), (Cfg(lr=-1.0), "Cfg.lr must be a positive number"),
                     (Cfg(lr=float("nan")), "positive number"), (Cfg(gamma=1.5), r"Cfg.gamma must be in \[0, 1\]"),
                     (Cfg(coef=-0.1), "Cfg.coef must be >= 0")]:
        with pytest.raises(CourseError, match=msg):
            check_fields(bad, positive_int=("n",), positive=("lr",), unit=("gamma",), nonneg=("coef",))
