"""Devices, seeds and profiles: the three things every notebook sets up first."""
from __future__ import annotations

import math
import os
import random
from typing import Any, Mapping

import numpy as np
import torch

PROFILES = ("smoke", "cpu", "gpu")


class CourseError(Exception):
    """An error a learner can act on; its message is one line saying what to do."""


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: `prefer` if given and available, else CUDA, else MPS, else CPU.

    Never hard-code "cuda" in a notebook; call this instead.
    """
    if prefer is not None:
        try:
            dev = torch.device(prefer)
        except (RuntimeError, TypeError):
            raise CourseError(f"unknown device {prefer!r}: use 'cpu', 'cuda', 'cuda:0' or 'mps' (or get_device() to pick one)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CourseError(f"device {prefer!r} asked for but CUDA is not available: use get_device() or 'cpu'")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise CourseError(f"device {prefer!r} asked for but MPS is not available: use get_device() or 'cpu'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA); with `deterministic`, ask torch for
    deterministic kernels so a run is reproducible from its seed."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CourseError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def default_profile() -> str:
    """COURSE_PROFILE from the environment if set, else 'gpu' when CUDA is available, else 'cpu'."""
    env = os.environ.get("COURSE_PROFILE", "").strip()
    if env:
        if env not in PROFILES:
            raise CourseError(f"COURSE_PROFILE={env!r} is not a profile: use one of {', '.join(PROFILES)}")
        return env
    return "gpu" if torch.cuda.is_available() else "cpu"


def select_profile(sizes: Mapping[str, Mapping[str, Any]], profile: str) -> dict[str, Any]:
    """The sizes for `profile` from a {profile: {name: value}} table, checked for a known name
    and for every profile defining the same keys."""
    if profile not in PROFILES:
        raise CourseError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    missing = [p for p in PROFILES if p not in sizes]
    if missing:
        raise CourseError(f"the sizes table lacks profile(s) {missing}: give smoke, cpu and gpu")
    keys = set(sizes[PROFILES[0]])
    for p in PROFILES[1:]:
        if set(sizes[p]) != keys:
            raise CourseError(f"profile {p!r} defines {sorted(set(sizes[p]) ^ keys)} differently from 'smoke': give every profile the same keys")
    return dict(sizes[profile])


class torch_threads:
    """Context manager: run with `n` torch intra-op threads, restoring the old setting after.

    Small networks (a few thousand parameters, batches of tens) run fastest on one thread;
    on a busy 2-core machine, torch's default of one thread per core can make them 10x slower.
    """

    def __init__(self, n: int = 1):
        self.n, self.old = n, None

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def check_fields(cfg: Any, *, positive_int: tuple[str, ...] = (), positive: tuple[str, ...] = (),
                 unit: tuple[str, ...] = (), nonneg: tuple[str, ...] = (), nonneg_int: tuple[str, ...] = (),
                 int_tuple: tuple[str, ...] = (), finite: tuple[str, ...] = ()) -> None:
    """The one config validator: check a config dataclass's fields by kind, raising a one-line
    CourseError naming the first bad one. Kinds: `positive_int` (ints > 0), `nonneg_int`
    (ints >= 0, e.g. seeds and warmup steps), `positive` (finite numbers > 0), `nonneg`
    (finite numbers >= 0), `unit` (numbers in [0, 1]), `finite` (any finite number) and
    `int_tuple` (a non-empty tuple of positive ints, e.g. hidden sizes). Booleans are never
    numbers here, and NaN or infinity never passes."""
    cls = type(cfg).__name__

    def number(v) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

    def integer(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    rules = (
        (positive_int, lambda v: integer(v) and v > 0, "a positive int"),
        (nonneg_int, lambda v: integer(v) and v >= 0, ">= 0 (an int)"),
        (positive, lambda v: number(v) and v > 0, "a positive number (finite)"),
        (nonneg, lambda v: number(v) and v >= 0, ">= 0 (a finite number)"),
        (unit, lambda v: number(v) and 0 <= v <= 1, "in [0, 1]"),
        (finite, number, "a finite number"),
        (int_tuple, lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(integer(h) and h > 0 for h in v),
         "a non-empty tuple of positive ints"),
    )
    for names, ok, what in rules:
        for name in names:
            v = getattr(cfg, name)
            if not ok(v):
                raise CourseError(f"{cls}.{name} must be {what}, got {v!r}")
