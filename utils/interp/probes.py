"""Linear probes, always reported beside a baseline, with an interval and a leak-free split.

A probe's accuracy means little alone: one-hot inputs make many facts linearly
decodable even from a random network. `probe_with_baselines` fits the same probe on
(a) the activations you care about, (b) the same activations with shuffled labels and,
optionally, (c) the activations of a randomly initialised model, and reports all three
with held-out accuracy.

Splits and intervals: pass `groups` (one id per example: the episode, history or board it
came from) whenever examples share a source, so that no group is on both sides of the split
(windows of one episode in train and test would leak). The held-out accuracy then carries a
95% interval from a bootstrap over the test GROUPS (`test_ci`); without groups, a Wilson
interval over test examples.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError, torch_threads
from utils.stats import bootstrap_statistic, wilson_ci


@dataclass
class ProbeResult:
    train_acc: float
    test_acc: float
    majority_acc: float  # accuracy of always guessing the most common training label, on the test split
    weight: Tensor = field(repr=False)  # [n_classes, d] (a direction per class)
    bias: Tensor = field(repr=False)
    test_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95% interval of test_acc (unit: test groups, else examples)
    n_test: int = 0
    n_test_groups: int = 0
    test_correct: np.ndarray = field(default=None, repr=False)  # [n_test] bool, the held-out hits

    def direction(self, cls: int = 1) -> Tensor:
        """The unit vector separating class `cls` from the others (for binary probes: class 1 vs 0)."""
        w = self.weight[cls] - self.weight.mean(0) if self.weight.shape[0] > 1 else self.weight[0]
        return w / w.norm().clamp_min(1e-12)


def _split(n: int, test_frac: float, seed: int, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): a random split of the examples, or of the groups if given."""
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_test = max(2, int(round(n * test_frac)))
        if n - n_test < 2:
            raise CourseError(f"test_frac={test_frac} leaves fewer than 2 training examples of {n}")
        return perm[n_test:], perm[:n_test]
    uniq = np.unique(groups)
    if len(uniq) < 4:
        raise CourseError(f"a grouped split needs at least 4 groups, got {len(uniq)}: collect more episodes")
    perm = rng.permutation(uniq)
    k = min(len(uniq) - 2, max(2, int(round(len(uniq) * test_frac))))
    test = np.isin(groups, perm[:k])
    return np.flatnonzero(~test), np.flatnonzero(test)


def _accuracy_ci(correct: np.ndarray, groups: np.ndarray | None, seed: int) -> tuple[float, float]:
    if groups is None:
        _, lo, hi = wilson_ci(int(correct.sum()), len(correct))
        return lo, hi
    uniq, inv = np.unique(groups, return_inverse=True)
    if len(uniq) < 2:
        return float("nan"), float("nan")
    hits, sizes = np.bincount(inv, weights=correct), np.bincount(inv).astype(float)
    _, lo, hi = bootstrap_statistic(lambda h, m: h.sum(-1) / m.sum(-1), hits, sizes, n_boot=1000, seed=seed)
    return lo, hi


def _check_probe_inputs(acts: Tensor, labels: Tensor, test_frac: float, groups) -> np.ndarray | None:
    if acts.ndim != 2 or labels.ndim != 1 or len(acts) != len(labels):
        raise CourseError(f"probe needs acts [n, d] and labels [n], got {tuple(acts.shape)} and {tuple(labels.shape)}")
    if len(acts) < 8:
        raise CourseError(f"probe needs at least 8 examples, got {len(acts)}: collect more observations")
    if not torch.isfinite(acts).all():
        raise CourseError("probe activations contain NaN or inf: check the model and the cache before probing")
    if labels.min() < 0:
        raise CourseError(f"probe labels must be class indices 0..C-1, got a minimum of {int(labels.min())}")
    if not 0 < test_frac < 1:
        raise CourseError(f"test_frac must be strictly between 0 and 1, got {test_frac}")
    if groups is None:
        return None
    groups = np.asarray(torch.as_tensor(groups).detach().cpu())
    if groups.shape != (len(acts),):
        raise CourseError(f"groups must have one id per example [{len(acts)}], got shape {groups.shape}")
    return groups


def train_probe(acts: Tensor, labels: Tensor, test_frac: float = 0.25, seed: int = 0, epochs: int = 300,
                lr: float = 0.05, weight_decay: float = 1e-3, groups: Tensor | np.ndarray | None = None) -> ProbeResult:
    """Fit a multinomial logistic-regression probe on standardised `acts` [n, d] -> `labels` [n]
    (full-batch Adam) and report accuracy on a held-out split, with a 95% interval.

    groups [n]: the source of each example (episode, history, board); the split then keeps
    every group on one side, and the interval resamples test groups."""
    acts = torch.as_tensor(acts).detach().float()
    acts = acts.reshape(len(acts), -1) if acts.ndim > 2 else acts
    labels = torch.as_tensor(labels).detach().long()
    groups = _check_probe_inputs(acts, labels, test_frac, groups)
    n_classes = int(labels.max()) + 1
    if len(torch.unique(labels)) < 2:
        raise CourseError("probe labels have a single class: nothing to decode; check the labelling function")
    tr, te = _split(len(acts), test_frac, seed, groups)
    mu, sd = acts[tr].mean(0), acts[tr].std(0).clamp_min(1e-6)
    x = (acts - mu) / sd
    with torch_threads(1 if x.numel() < 2_000_000 else torch.get_num_threads()):  # small problems: one thread is fastest
        res = _fit(x, labels, tr, te, mu, sd, n_classes, seed, epochs, lr, weight_decay)
    res.test_ci = _accuracy_ci(res.test_correct.astype(float), None if groups is None else groups[te], seed)
    res.n_test = len(te)
    res.n_test_groups = len(np.unique(groups[te])) if groups is not None else len(te)
    return res


def _fit(x, labels, tr, te, mu, sd, n_classes, seed, epochs, lr, weight_decay) -> ProbeResult:
    """Full-batch Adam on the mean cross-entropy plus `weight_decay` x param (torch.optim.Adam's
    coupled L2, betas (0.9, 0.999), eps 1e-8), written out with the softmax gradient in closed form:
    the same optimiser as `torch.optim.Adam` on `nn.Linear`, without autograd's per-step overhead
    (a probe is hundreds of tiny steps; this is several times faster)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.empty(n_classes, x.shape[1]).normal_(0, 0.01, generator=g)
    b = torch.zeros(n_classes)
    xtr, ytr = x[tr].contiguous(), labels[tr]
    onehot = torch.nn.functional.one_hot(ytr, n_classes).float()
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    state = [(w, torch.zeros_like(w), torch.zeros_like(w)), (b, torch.zeros_like(b), torch.zeros_like(b))]
    with torch.no_grad():
        for step in range(1, epochs + 1):
            dz = torch.softmax(torch.addmm(b, xtr, w.T), -1).sub_(onehot).div_(len(tr))
            grads = (dz.T @ xtr, dz.sum(0))
            bc1, bc2_sqrt = 1 - beta1 ** step, (1 - beta2 ** step) ** 0.5
            for (p, m, v), grad in zip(state, grads):
                if weight_decay:
                    grad = grad.add(p, alpha=weight_decay)
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(eps), value=-lr / bc1)
        pred = torch.addmm(b, x, w.T).argmax(-1)
    return _scored(w, b, pred, labels, tr, te, mu, sd, n_classes)


def _fit_autograd(x, labels, tr, te, mu, sd, n_classes, seed, epochs, lr, weight_decay) -> ProbeResult:
    """The reference `_fit` is checked against (tests/test_probes.py): nn.Linear, cross_entropy and
    torch.optim.Adam, one autograd step per epoch."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        lin.weight.normal_(0, 0.01, generator=g)
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(x[tr]), labels[tr]).backward()
        opt.step()
    with torch.no_grad():
        return _scored(lin.weight.detach(), lin.bias.detach(), lin(x).argmax(-1), labels, tr, te, mu, sd, n_classes)


@torch.no_grad()
def _scored(w, b, pred, labels, tr, te, mu, sd, n_classes) -> ProbeResult:
    """A fitted probe (w, b on standardised inputs; pred its class for every example) scored on the
    split, with its weights expressed in the unstandardised activation space so its direction can steer."""
    majority = torch.bincount(labels[tr], minlength=n_classes).argmax()
    hits = pred[te] == labels[te]
    return ProbeResult((pred[tr] == labels[tr]).float().mean().item(), hits.float().mean().item(),
                       (labels[te] == majority).float().mean().item(), w / sd, b - (w * mu / sd).sum(-1),
                       test_correct=hits.numpy())


@dataclass
class ProbeReport:
    probe: ProbeResult
    shuffled: ProbeResult
    random_model: ProbeResult | None

    @property
    def baseline_acc(self) -> float:
        """The strongest baseline: max of majority class, shuffled labels and random-init model."""
        accs = [self.probe.majority_acc, self.shuffled.test_acc]
        if self.random_model is not None:
            accs.append(self.random_model.test_acc)
        return max(accs)

    @property
    def gain(self) -> float:
        return self.probe.test_acc - self.baseline_acc

    def table(self) -> str:
        rows = [("probe (trained model)", self.probe.test_acc), ("majority class", self.probe.majority_acc),
                ("shuffled labels", self.shuffled.test_acc)]
        if self.random_model is not None:
            rows.append(("random-init model", self.random_model.test_acc))
        lo, hi = self.probe.test_ci
        return "\n".join(f"{name:<24}{acc:6.3f}" for name, acc in rows) + f"\nprobe 95% interval      [{lo:.3f}, {hi:.3f}]"


def probe_with_baselines(acts: Tensor, labels: Tensor, random_acts: Tensor | None = None, seed: int = 0,
                         **kw) -> ProbeReport:
    """Held-out probe accuracy on `acts`, beside the shuffled-label and (if given) random-model
    baselines; pass `groups=` (see `train_probe`) when examples share a source."""
    labels = torch.as_tensor(labels).long()
    probe = train_probe(acts, labels, seed=seed, **kw)
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(len(labels)))
    shuffled = train_probe(acts, labels[perm], seed=seed, **kw)
    rand = train_probe(random_acts, labels, seed=seed, **kw) if random_acts is not None else None
    return ProbeReport(probe, shuffled, rand)


def probe_with_controls(acts: Tensor, labels: Tensor, random_acts: Tensor, groups, seed: int = 0) -> dict[str, float]:
    """One row of a probe table: the held-out accuracy of a probe on `acts` with a grouped split
    (no group on both sides) and its 95% interval over test groups, beside its controls (the
    same probe on a random-init model's `random_acts`, on shuffled labels, and the majority
    class), and the gain over the strongest control."""
    rep = probe_with_baselines(acts, labels, random_acts, seed=seed, groups=groups)
    return {"probe": rep.probe.test_acc, "low": rep.probe.test_ci[0], "high": rep.probe.test_ci[1],
            "random_net": rep.random_model.test_acc, "shuffled": rep.shuffled.test_acc,
            "majority": rep.probe.majority_acc, "gain": rep.gain, "n_test_groups": rep.probe.n_test_groups}
