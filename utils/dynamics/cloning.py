"""Behavioural cloning by policy distillation (Rusu et al. 2015): train a fresh network to match
a trained agent's action distribution on the agent's own states, optionally adding states the
student visits, labelled by the teacher (DAgger, Ross et al. 2011).

    data = collect_states(teacher, 20_000, seed=0)
    student, log = distil(teacher, data["obs"], hidden=(16, 16), steps=1500, seed=0)
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.colour_goal import ColourGoalGrid
from utils.models.mlp_policy import HookedMLPPolicy


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) between the action distributions softmax(logits / temperature),
    averaged over the batch: a scalar with gradients for the student only (the teacher is a
    fixed target)."""
    t = torch.log_softmax(teacher_logits.detach() / temperature, -1)
    s = torch.log_softmax(student_logits / temperature, -1)
    return (t.exp() * (t - s)).sum(-1).mean()


@torch.no_grad()
def action_agreement(teacher_logits: Tensor, student_logits: Tensor) -> dict[str, float]:
    """How alike two policies are on the same states: "agreement", the fraction of rows whose
    greedy actions (argmax) are equal, and "tv", the mean total-variation distance
    0.5 * sum_a |p_teacher(a) - p_student(a)| between the action distributions."""
    if teacher_logits.shape != student_logits.shape or teacher_logits.ndim != 2:
        raise CourseError(f"need logits of the same shape [n, n_actions], got {tuple(teacher_logits.shape)} "
                          f"and {tuple(student_logits.shape)}")
    agree = (teacher_logits.argmax(-1) == student_logits.argmax(-1)).float().mean()
    tv = 0.5 * (torch.softmax(teacher_logits, -1) - torch.softmax(student_logits, -1)).abs().sum(-1).mean()
    return {"agreement": float(agree), "tv": float(tv)}


def _make_env(env, n_envs: int, seed: int):
    """`env`: None (the colour-goal gridworld), a course environment name (utils.envs.make_env) or a
    callable (n_envs, seed) -> BatchedEnv."""
    if env is None:
        return None
    if isinstance(env, str):
        from utils.envs import make_env
        return make_env(env, n_envs, seed=seed)
    if callable(env):
        return env(n_envs, seed)
    raise CourseError(f"env must be None, a course environment name or a callable (n_envs, seed) -> BatchedEnv, "
                      f"got {type(env).__name__}")


@torch.no_grad()
def collect_states(policy, n_states: int, seed: int = 0, greedy: bool = False, n_envs: int = 64,
                   size: int = 5, env=None) -> dict[str, Tensor]:
    """Roll `policy` out until `n_states` observations are collected (sampled actions from a local
    generator, or greedy); the global random state is not touched.

    `env=None`: the colour-goal gridworld; the result also holds its state (agent [n, 2], tiles
    [n, 2, 2], goal [n]) for task variables. Any other environment of the course's protocol
    (`utils.envs.base.BatchedEnv`: `reset(seed)` and `step(actions) -> (obs, reward, terminated,
    truncated, info)` with auto-reset), given by name (`make_env`) or as a callable (n_envs, seed)
    -> env: obs only. Always: obs [n, ...] and `episode` [n], an id per episode (the unit of
    grouped splits)."""
    if n_states < n_envs:
        raise CourseError(f"n_states={n_states} is less than n_envs={n_envs}")
    g = torch.Generator().manual_seed(seed)
    generic = _make_env(env, n_envs, seed)
    if generic is None:
        grid = ColourGoalGrid(n_envs, size=size, seed=seed)
        obs = torch.from_numpy(grid.observe_np())
        keys = ("obs", "agent", "tiles", "goal", "episode")
    else:
        obs = torch.as_tensor(generic.reset(seed=seed)).float()
        keys = ("obs", "episode")
    ep = np.arange(n_envs)
    next_ep = n_envs
    rows = {k: [] for k in keys}
    total = 0
    while total < n_states:
        rows["obs"].append(obs)
        rows["episode"].append(torch.as_tensor(ep.copy()))
        if generic is None:
            for k, v in (("agent", grid.agent), ("tiles", grid.tiles), ("goal", grid.goal)):
                rows[k].append(torch.as_tensor(v.copy()))
        total += n_envs
        logits = policy(obs)
        a = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(-1)
        if generic is None:
            _, _, term, trunc, _ = grid.step_np(a.numpy())
            obs = torch.from_numpy(grid.observe_np())
        else:
            obs, _, term, trunc, _ = generic.step(a)
            obs = torch.as_tensor(obs).float()
            term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
        done = term | trunc
        ep[done] = np.arange(next_ep, next_ep + int(done.sum()))
        next_ep += int(done.sum())
    return {k: torch.cat(v)[:n_states] for k, v in rows.items()}


def fresh_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of `model`'s architecture with freshly initialised weights (each submodule's own
    `reset_parameters`), drawn with the global generator forked and seeded `seed`: the caller's
    random state is unchanged and the same seed gives the same network."""
    import copy

    new = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in new.modules():
            if m is not new and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return new


def _n_inputs(model) -> tuple:
    obs_dim = getattr(model, "obs_dim", None)
    return (obs_dim,) if isinstance(obs_dim, int) else tuple(getattr(model, "obs_shape", ()) or ())


def distil(teacher, states: Tensor, hidden: Sequence[int] = (64, 64), steps: int = 1500, batch_size: int = 512,
           lr: float = 3e-3, temperature: float = 1.0, seed: int = 0, student: torch.nn.Module | None = None,
           dagger_rounds: int = 0, dagger_states: int = 4096,
           loss_fn: Callable[[Tensor, Tensor, float], Tensor] = distillation_loss,
           checkpoint_steps: Sequence[int] = (), env=None) -> tuple[torch.nn.Module, dict]:
    """Train a fresh student to match `teacher`'s logits on `states` by minimising `loss_fn`
    (KL(teacher || student)) with Adam. The student: `student` if given; else, for an MLP teacher
    (HookedMLPPolicy), a HookedMLPPolicy of width `hidden` without a value head; else a copy of
    the teacher's architecture re-initialised (`fresh_copy`). Weights are drawn and minibatches
    sampled from generators seeded `seed`; the global random state is not touched.

    With `dagger_rounds` > 0 the steps are split into rounds; after each, `dagger_states` states
    visited by the STUDENT (sampled actions, in `env`: see `collect_states`) are labelled by the
    teacher and added to the data. `checkpoint_steps`: optimiser steps (0 = before training) at
    which a copy of the student's weights is kept in log["checkpoints"] as (step, state_dict), the
    clone's own training history. Returns (student, log) with the loss per step, the number of
    training states and the checkpoints."""
    want = _n_inputs(teacher)
    if states.ndim < 2 or (want and tuple(states.shape[1:]) != want):
        raise CourseError(f"states must be [n, {', '.join(map(str, want)) or '...'}] observations of the teacher's task, "
                          f"got {tuple(states.shape)}")
    if student is None:
        if isinstance(teacher, HookedMLPPolicy):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                student = HookedMLPPolicy(teacher.obs_dim, teacher.n_actions, hidden, value_head=False)
        else:
            student = fresh_copy(teacher, seed)
    n_act_t = getattr(teacher, "n_actions", None)
    n_act_s = getattr(student, "n_actions", None)
    if (n_act_t is not None and n_act_s is not None and n_act_s != n_act_t) or _n_inputs(student) != _n_inputs(teacher):
        raise CourseError(f"the student acts in {n_act_s} actions on inputs {_n_inputs(student)} but the teacher in "
                          f"{n_act_t} on {_n_inputs(teacher)}: distillation needs the same action space")
    teacher.eval()
    data = states.float()
    with torch.no_grad():
        targets = teacher(data)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    rounds = dagger_rounds + 1
    keep = {int(s) for s in checkpoint_steps}
    log = {"loss": [], "n_states": [], "checkpoints": []}

    def snapshot(step):
        if step in keep:
            log["checkpoints"].append((step, {k: v.detach().clone() for k, v in student.state_dict().items()}))

    snapshot(0)
    step = 0
    for r in range(rounds):
        n_steps = steps // rounds + (steps % rounds if r == rounds - 1 else 0)
        for _ in range(n_steps):
            idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=g)
            loss = loss_fn(student(data[idx]), targets[idx], temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            log["loss"].append(loss.item())
            snapshot(step)
        log["n_states"].append(len(data))
        if r < rounds - 1:
            student.eval()
            new = collect_states(student, dagger_states, seed=seed * 1000 + r + 1, env=env)["obs"]
            with torch.no_grad():
                targets = torch.cat([targets, teacher(new)])
            data = torch.cat([data, new.float()])
            student.train()
    return student.eval(), log


@torch.no_grad()
def value_error(model, n_states: int = 256, repeats: int = 8, seed: int = 0, gamma: float = 0.99,
                size: int = 5) -> dict[str, float]:
    """How well the value function predicts the return from start states: `n_states` random start
    states, each played `repeats` times with sampled actions; G(s) is the mean discounted return
    over the repeats. Returns "mae" = mean |V(s) - G(s)| and "explained_variance" =
    1 - Var(G - V) / Var(G) over the start states (nan if G is constant)."""
    start = ColourGoalGrid(n_states, size=size, seed=seed, auto_reset=False)
    env = ColourGoalGrid(n_states * repeats, size=size, seed=seed, auto_reset=False)
    env.set_state(np.repeat(start.agent, repeats, 0), np.repeat(start.tiles, repeats, 0),
                  np.repeat(start.goal, repeats, 0))
    g = torch.Generator().manual_seed(seed)
    v0 = model.forward_both(torch.from_numpy(start.observe_np()))[1].double()
    active = np.ones(len(env.goal), bool)
    ret = np.zeros(len(env.goal))
    for t in range(env.max_steps):
        logits = model(torch.from_numpy(env.observe_np()))
        a = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(-1).numpy()
        _, r, term, _, _ = env.step_np(a)
        ret += active * (gamma ** t) * r
        active &= ~term
        if not active.any():
            break
    G = torch.from_numpy(ret.reshape(n_states, repeats).mean(1))
    ev = float(1 - (G - v0).var() / G.var()) if float(G.var()) > 0 else float("nan")
    return {"mae": float((G - v0).abs().mean()), "explained_variance": ev}
