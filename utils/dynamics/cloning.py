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

from utils.core import CourseError, set_seed
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


@torch.no_grad()
def collect_states(policy, n_states: int, seed: int = 0, greedy: bool = False, n_envs: int = 64,
                   size: int = 5) -> dict[str, Tensor]:
    """Roll `policy` out in the colour-goal gridworld (sampled actions, or greedy) until `n_states`
    observations are collected. Returns obs [n, obs_dim], the state (agent [n, 2], tiles [n, 2, 2],
    goal [n]) for task variables, and `episode` [n]: an id per episode, the unit of grouped splits."""
    if n_states < n_envs:
        raise CourseError(f"n_states={n_states} is less than n_envs={n_envs}")
    env = ColourGoalGrid(n_envs, size=size, seed=seed)
    g = torch.Generator().manual_seed(seed)
    ep = np.arange(n_envs)
    next_ep = n_envs
    rows = {k: [] for k in ("obs", "agent", "tiles", "goal", "episode")}
    total = 0
    while total < n_states:
        obs = torch.from_numpy(env.observe_np())
        for k, v in (("obs", obs), ("agent", env.agent.copy()), ("tiles", env.tiles.copy()),
                     ("goal", env.goal.copy()), ("episode", ep.copy())):
            rows[k].append(torch.as_tensor(v))
        total += n_envs
        logits = policy(obs)
        a = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(-1)
        _, _, term, trunc, _ = env.step_np(a.numpy())
        done = term | trunc
        ep[done] = np.arange(next_ep, next_ep + int(done.sum()))
        next_ep += int(done.sum())
    return {k: torch.cat(v)[:n_states] for k, v in rows.items()}


def distil(teacher, states: Tensor, hidden: Sequence[int] = (64, 64), steps: int = 1500, batch_size: int = 512,
           lr: float = 3e-3, temperature: float = 1.0, seed: int = 0, student: HookedMLPPolicy | None = None,
           dagger_rounds: int = 0, dagger_states: int = 4096,
           loss_fn: Callable[[Tensor, Tensor, float], Tensor] = distillation_loss) -> tuple[HookedMLPPolicy, dict]:
    """Train a fresh HookedMLPPolicy (no value head) to match `teacher`'s logits on `states` by
    minimising `loss_fn` (KL(teacher || student)) with Adam. With `dagger_rounds` > 0 the steps
    are split into rounds; after each, `dagger_states` states visited by the STUDENT (sampled
    actions) are labelled by the teacher and added to the data. Returns (student, log) with the
    loss per step and the number of training states."""
    if states.ndim != 2 or states.shape[1] != teacher.obs_dim:
        raise CourseError(f"states must be [n, {teacher.obs_dim}] observations of the teacher's task, got {tuple(states.shape)}")
    if student is None:
        set_seed(seed)
        student = HookedMLPPolicy(teacher.obs_dim, teacher.n_actions, hidden, value_head=False)
    if student.n_actions != teacher.n_actions or student.obs_dim != teacher.obs_dim:
        raise CourseError(f"the student acts in {student.n_actions} actions on {student.obs_dim} inputs but the teacher "
                          f"in {teacher.n_actions} on {teacher.obs_dim}: distillation needs the same action space")
    teacher.eval()
    data = states.float()
    with torch.no_grad():
        targets = teacher(data)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    rounds = dagger_rounds + 1
    log = {"loss": [], "n_states": []}
    for r in range(rounds):
        n_steps = steps // rounds + (steps % rounds if r == rounds - 1 else 0)
        for _ in range(n_steps):
            idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=g)
            loss = loss_fn(student(data[idx]), targets[idx], temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            log["loss"].append(loss.item())
        log["n_states"].append(len(data))
        if r < rounds - 1:
            student.eval()
            new = collect_states(student, dagger_states, seed=seed * 1000 + r + 1)["obs"]
            with torch.no_grad():
                targets = torch.cat([targets, teacher(new)])
            data = torch.cat([data, new])
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
