import numpy as np
import pytest
import torch

from utils.core import CourseError
from utils.interp.probes import probe_with_baselines, train_probe


def _data(n=400, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def test_probe_decodes_linear_variable_and_baselines_do_not():
    x, y = _data()
    rep = probe_with_baselines(x, y, random_acts=torch.randn_like(x))
    assert rep.probe.test_acc > 0.9
    assert rep.shuffled.test_acc < 0.7
    assert rep.random_model.test_acc < 0.7
    assert rep.gain > 0.2
    assert "shuffled labels" in rep.table()


def test_probe_direction_points_along_signal():
    x, y = _data()
    d = train_probe(x, y).direction(1)
    assert d.norm() == pytest.approx(1.0, abs=1e-5)
    assert d[0] > 0.6 and abs(d[2:]).max() < 0.3


def test_probe_held_out_is_honest_on_noise():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 150, generator=g)  # more dims than the train split can pin down
    y = torch.randint(0, 2, (200,), generator=g)
    res = train_probe(x, y)
    assert res.train_acc > 0.9  # it memorises
    assert res.test_acc < 0.7  # but does not generalise


def test_probe_bad_inputs():
    with pytest.raises(CourseError, match="at least 8"):
        train_probe(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(CourseError, match="single class"):
        train_probe(torch.randn(20, 3), torch.zeros(20))
    with pytest.raises(CourseError, match="labels"):
        train_probe(torch.randn(20, 3), torch.zeros(19))


def test_probe_rejects_silent_mistakes():
    x, y = _data(40)
    for kw, msg in (({"test_frac": 1.0}, "test_frac"), ({"test_frac": 0.0}, "test_frac")):
        with pytest.raises(CourseError, match=msg):
            train_probe(x, y, **kw)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(CourseError, match="NaN"):
        train_probe(bad, y)
    with pytest.raises(CourseError, match="class indices"):
        train_probe(x, y - 1)
    with pytest.raises(CourseError, match="groups"):
        train_probe(x, y, groups=torch.arange(39))


def test_grouped_split_keeps_groups_apart_and_interval_brackets_accuracy():
    x, y = _data(400)
    groups = torch.arange(400) // 10  # 40 "episodes" of 10 examples
    res = train_probe(x, y, groups=groups)
    lo, hi = res.test_ci
    assert lo <= res.test_acc <= hi and hi - lo < 0.2
    assert res.n_test_groups < res.n_test and res.n_test % 10 == 0  # whole groups only
    plain = train_probe(x, y)
    assert plain.test_ci[0] <= plain.test_acc <= plain.test_ci[1]


def test_grouped_split_stops_a_leak():
    # Each group has its own random label and near-identical examples: an ungrouped split memorises
    # the group and looks accurate; a grouped split shows there is nothing to generalise.
    g = torch.Generator().manual_seed(0)
    centres, labels = torch.randn(60, 100, generator=g), torch.randint(0, 2, (60,), generator=g)
    idx = torch.arange(600) // 10
    x = centres[idx] + 0.01 * torch.randn(600, 100, generator=g)
    y = labels[idx]
    assert train_probe(x, y).test_acc > 0.9
    assert train_probe(x, y, groups=idx).test_acc < 0.75


@pytest.mark.parametrize("n,d,n_classes,weight_decay", [(400, 60, 2, 1e-3), (300, 25, 4, 1e-2), (120, 200, 3, 0.0)])
def test_closed_form_fit_matches_torch_adam_on_a_linear_layer(n, d, n_classes, weight_decay):
    """_fit (the softmax gradient in closed form, Adam written out) is the optimiser nn.Linear +
    cross_entropy + torch.optim.Adam runs: same weights to float precision, same predictions."""
    from utils.interp.probes import _fit, _fit_autograd, _split

    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, n_classes, generator=g) + 2 * torch.randn(n, n_classes, generator=g)).argmax(-1)
    tr, te = _split(n, 0.25, 0, None)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    xs = (x - mu) / sd
    fast = _fit(xs, y, tr, te, mu, sd, n_classes, 3, 150, 0.05, weight_decay)
    slow = _fit_autograd(xs, y, tr, te, mu, sd, n_classes, 3, 150, 0.05, weight_decay)
    assert torch.allclose(fast.weight, slow.weight, rtol=1e-4, atol=1e-5 * slow.weight.abs().max().item())
    assert torch.allclose(fast.bias, slow.bias, rtol=1e-4, atol=1e-4)
    assert np.array_equal(fast.test_correct, slow.test_correct)
    assert (fast.train_acc, fast.test_acc, fast.majority_acc) == (slow.train_acc, slow.test_acc, slow.majority_acc)
    # the comparison can fail: another step size lands elsewhere
    assert not torch.allclose(_fit(xs, y, tr, te, mu, sd, n_classes, 3, 150, 0.01, weight_decay).weight,
                              slow.weight, rtol=1e-4, atol=1e-5 * slow.weight.abs().max().item())
