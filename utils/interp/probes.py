"""Linear probes, always reported beside a baseline.

A probe's accuracy means little alone: one-hot inputs make many facts linearly
decodable even from a random network. `probe_with_baselines` fits the same probe on
(a) the activations you care about, (b) the same activations with shuffled labels and,
optionally, (c) the activations of a randomly initialised model, and reports all three
with held-out accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError, torch_threads


@dataclass
class ProbeResult:
    train_acc: float
    test_acc: float
    majority_acc: float  # accuracy of always guessing the most common training label, on the test split
    weight: Tensor = field(repr=False)  # [n_classes, d] (a direction per class)
    bias: Tensor = field(repr=False)

    def direction(self, cls: int = 1) -> Tensor:
        """The unit vector separating class `cls` from the others (for binary probes: class 1 vs 0)."""
        w = self.weight[cls] - self.weight.mean(0) if self.weight.shape[0] > 1 else self.weight[0]
        return w / w.norm().clamp_min(1e-12)


def _split(n: int, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_frac)))
    return perm[n_test:], perm[:n_test]


def train_probe(acts: Tensor, labels: Tensor, test_frac: float = 0.25, seed: int = 0, epochs: int = 300,
                lr: float = 0.05, weight_decay: float = 1e-3) -> ProbeResult:
    """Fit a multinomial logistic-regression probe on standardised `acts` [n, d] -> `labels` [n]
    (full-batch Adam) and report accuracy on a held-out split."""
    acts = torch.as_tensor(acts).detach().float().reshape(len(acts), -1)
    labels = torch.as_tensor(labels).detach().long()
    if acts.ndim != 2 or labels.ndim != 1 or len(acts) != len(labels):
        raise CourseError(f"probe needs acts [n, d] and labels [n], got {tuple(acts.shape)} and {tuple(labels.shape)}")
    if len(acts) < 8:
        raise CourseError(f"probe needs at least 8 examples, got {len(acts)}: collect more observations")
    n_classes = int(labels.max()) + 1
    if n_classes < 2:
        raise CourseError("probe labels have a single class: nothing to decode; check the labelling function")
    tr, te = _split(len(acts), test_frac, seed)
    mu, sd = acts[tr].mean(0), acts[tr].std(0).clamp_min(1e-6)
    x = (acts - mu) / sd
    with torch_threads(1 if x.numel() < 2_000_000 else torch.get_num_threads()):  # small problems: one thread is fastest
        return _fit(x, labels, tr, te, mu, sd, n_classes, seed, epochs, lr, weight_decay)


def _fit(x, labels, tr, te, mu, sd, n_classes, seed, epochs, lr, weight_decay) -> ProbeResult:
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
        pred = lin(x).argmax(-1)
        train_acc = (pred[tr] == labels[tr]).float().mean().item()
        test_acc = (pred[te] == labels[te]).float().mean().item()
        majority = torch.bincount(labels[tr], minlength=n_classes).argmax()
        majority_acc = (labels[te] == majority).float().mean().item()
        # express the probe in the unstandardised activation space so its direction can steer
        weight = lin.weight.detach() / sd
        bias = lin.bias.detach() - (lin.weight.detach() * mu / sd).sum(-1)
    return ProbeResult(train_acc, test_acc, majority_acc, weight, bias)


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
        return "\n".join(f"{name:<24}{acc:6.3f}" for name, acc in rows)


def probe_with_baselines(acts: Tensor, labels: Tensor, random_acts: Tensor | None = None, seed: int = 0,
                         **kw) -> ProbeReport:
    """Held-out probe accuracy on `acts`, beside the shuffled-label and (if given) random-model baselines."""
    labels = torch.as_tensor(labels).long()
    probe = train_probe(acts, labels, seed=seed, **kw)
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(len(labels)))
    shuffled = train_probe(acts, labels[perm], seed=seed, **kw)
    rand = train_probe(random_acts, labels, seed=seed, **kw) if random_acts is not None else None
    return ProbeReport(probe, shuffled, rand)
