"""Checks for chapter 01 (policy gradients and Q-learning): GAE, PPO's clipped loss,
the TD target and direct logit attribution. References live in utils.rl."""
from __future__ import annotations

import torch

from utils.exercises import ExerciseFailed, check
from utils.interp.attribution import direct_logit_attribution
from utils.rl.dqn import td_target
from utils.rl.ppo import clipped_surrogate_loss, compute_gae


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    if not isinstance(got, torch.Tensor):
        raise ExerciseFailed(f"{what}: expected a tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise ExerciseFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got.float(), want.float(), atol=atol, rtol=1e-4):
        raise ExerciseFailed(f"{what}: values differ from the reference (max error {(got.float() - want.float()).abs().max():.4f})")


@check
def check_compute_gae(compute_gae_fn) -> None:
    """compute_gae(rewards, values, dones, last_value, gamma, gae_lambda) -> advantages [T, N]."""
    # A one-step rollout first: the advantage is the TD error.
    r, v, d, lv = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 1.0]]), torch.tensor([2.0, 2.0])
    got = compute_gae_fn(r, v, d, lv, 0.9, 0.95)
    want = compute_gae(r, v, d, lv, 0.9, 0.95)
    if isinstance(got, torch.Tensor) and got.shape == want.shape and abs(float(got[0, 1]) - 0.5) > 1e-5:
        raise ExerciseFailed("one step that ends the episode (done=1): advantage should be r - V = 0.5, with no bootstrap from last_value")
    if isinstance(got, torch.Tensor) and got.shape == want.shape and abs(float(got[0, 0]) - 2.3) > 1e-5:
        raise ExerciseFailed("one step that does not end the episode: advantage should be r + gamma * last_value - V = 2.3; "
                             "is last_value used for the final step?")
    _close(got, want, "one-step rollout")
    g = torch.Generator().manual_seed(0)
    for T, N, gamma, lam in ((6, 3, 0.99, 0.95), (10, 4, 0.9, 0.5), (5, 2, 0.99, 1.0), (5, 2, 0.9, 0.0)):
        rewards = torch.randn(T, N, generator=g)
        values = torch.randn(T, N, generator=g)
        dones = (torch.rand(T, N, generator=g) < 0.3).float()
        last_value = torch.randn(N, generator=g)
        want = compute_gae(rewards, values, dones, last_value, gamma, lam)
        got = compute_gae_fn(rewards.clone(), values.clone(), dones.clone(), last_value.clone(), gamma, lam)
        if isinstance(got, torch.Tensor) and got.shape == want.shape and not torch.allclose(got, want, atol=1e-5):
            no_done = compute_gae(rewards, values, torch.zeros_like(dones), last_value, gamma, lam)
            if torch.allclose(got, no_done, atol=1e-5):
                raise ExerciseFailed("advantages flow across episode boundaries: multiply both the bootstrap and the running sum by (1 - dones[t])")
            raise ExerciseFailed(f"T={T}, N={N}, gamma={gamma}, lambda={lam}: advantages differ from the reference "
                                 "(delta_t = r_t + gamma V_next (1 - done_t) - V_t; A_t = delta_t + gamma lambda (1 - done_t) A_(t+1))")
        _close(got, want, f"T={T}, N={N}, gamma={gamma}, lambda={lam}")


@check
def check_clipped_surrogate_loss(loss_fn) -> None:
    """clipped_surrogate_loss(logp_new, logp_old, advantages, clip_coef) -> scalar loss to minimise."""
    # Ratio inside the clip range: the loss is -mean(ratio * A).
    lp_old = torch.tensor([-1.0, -1.0])
    got = loss_fn(torch.tensor([-1.0, -1.0]), lp_old, torch.tensor([1.0, -1.0]), 0.2)
    if not isinstance(got, torch.Tensor) or got.numel() != 1:
        raise ExerciseFailed(f"should return a scalar tensor (the mean loss), got {got!r}")
    if abs(float(got)) > 1e-6:
        raise ExerciseFailed(f"ratio 1 and advantages (+1, -1): the loss should be 0, got {float(got):.4f}")
    got = loss_fn(torch.tensor([-0.9]), torch.tensor([-1.0]), torch.tensor([2.0]), 0.2)
    want = -torch.exp(torch.tensor(0.1)) * 2
    if abs(float(got) - float(want)) > 1e-5:
        if abs(float(got) + float(want)) < 1e-5:
            raise ExerciseFailed("the sign is flipped: return the *loss* to minimise, minus the clipped objective")
        raise ExerciseFailed(f"ratio exp(0.1) inside the clip range, A=2: expected {float(want):.4f}, got {float(got):.4f} "
                             "(the ratio is exp(logp_new - logp_old))")
    # Ratio far above 1 + eps with A > 0: clipped. Ratio far below 1 - eps with A < 0: clipped too.
    for lp_new, adv, want, why in ((0.0, 1.0, -1.2, "ratio e > 1.2 with A > 0: the objective is clipped at 1.2 A"),
                                   (-2.0, -1.0, 0.8, "ratio 1/e < 0.8 with A < 0: the objective is clipped at 0.8 A"),
                                   (0.0, -1.0, torch.e, "ratio e > 1.2 with A < 0: the unclipped term is smaller (pessimistic), keep it"),
                                   (-2.0, 1.0, -1 / torch.e, "ratio 1/e < 0.8 with A > 0: the unclipped term is smaller, keep it")):
        got = loss_fn(torch.tensor([lp_new]), torch.tensor([-1.0]), torch.tensor([adv]), 0.2)
        if abs(float(got) - float(want)) > 1e-4:
            raise ExerciseFailed(f"{why}: expected loss {float(want):.4f}, got {float(got):.4f} "
                                 "(take the elementwise min of ratio*A and clip(ratio)*A, then minus the mean)")
    g = torch.Generator().manual_seed(1)
    for clip in (0.1, 0.2, 0.3):
        lp_new, lp_old, adv = torch.randn(64, generator=g) * 0.5, torch.randn(64, generator=g) * 0.5, torch.randn(64, generator=g)
        _close(loss_fn(lp_new, lp_old, adv, clip), clipped_surrogate_loss(lp_new, lp_old, adv, clip), f"random batch, clip={clip}")
    lp_new = torch.randn(16, generator=g, requires_grad=True)
    loss = loss_fn(lp_new, torch.randn(16, generator=g), torch.randn(16, generator=g), 0.2)
    if not loss.requires_grad:
        raise ExerciseFailed("the loss has no gradient with respect to logp_new: do not detach or convert to numpy")


@check
def check_td_target(td_target_fn) -> None:
    """td_target(rewards, next_q, terminated, gamma) -> r + gamma * (1 - terminated) * max_a' next_q."""
    got = td_target_fn(torch.tensor([1.0, 1.0]), torch.tensor([[0.0, 2.0], [0.0, 2.0]]), torch.tensor([False, True]), 0.5)
    if isinstance(got, torch.Tensor) and got.shape == (2,):
        if abs(float(got[1]) - 1.0) > 1e-6:
            raise ExerciseFailed("where the episode terminated the target is just the reward: no bootstrap from next_q")
        if abs(float(got[0]) - 2.0) > 1e-6:
            if abs(float(got[0]) - 1.5) < 1e-6:
                raise ExerciseFailed("bootstrap from the *max* over next actions (Q-learning), not the mean")
            raise ExerciseFailed(f"r=1, gamma=0.5, max next Q=2, not terminated: target should be 2.0, got {float(got[0]):.3f}")
    g = torch.Generator().manual_seed(2)
    for gamma in (0.99, 0.9, 0.0):
        r = torch.randn(32, generator=g)
        nq = torch.randn(32, 4, generator=g)
        term = torch.rand(32, generator=g) < 0.3
        _close(td_target_fn(r, nq, term, gamma), td_target(r, nq, term, gamma), f"random batch, gamma={gamma}")
        _close(td_target_fn(r, nq, term.float(), gamma), td_target(r, nq, term, gamma), f"float terminated flags, gamma={gamma}")


@check
def check_direct_logit_attribution(dla_fn) -> None:
    """direct_logit_attribution(h, W, a, b) -> [batch, d] contributions h * (W[a] - W[b])."""
    g = torch.Generator().manual_seed(3)
    h = torch.relu(torch.randn(8, 6, generator=g))
    W = torch.randn(4, 6, generator=g)
    a = torch.randint(0, 4, (8,), generator=g)
    b = (a + 1 + torch.randint(0, 3, (8,), generator=g)) % 4
    got = dla_fn(h, W, a, b)
    want = direct_logit_attribution(h, W, a, b)
    if isinstance(got, torch.Tensor) and got.shape == (8,):
        raise ExerciseFailed("return one contribution per unit, shape [batch, d]: do not sum over units")
    _close(got, want, "random batch")
    logits = h @ W.T
    if not torch.allclose(got.sum(-1), logits.gather(1, a[:, None]).squeeze(1) - logits.gather(1, b[:, None]).squeeze(1), atol=1e-5):
        raise ExerciseFailed("summed over units, the contributions should equal logit[a] - logit[b] (without biases)")


CHECKS = {
    "compute_gae": check_compute_gae,
    "clipped_surrogate_loss": check_clipped_surrogate_loss,
    "td_target": check_td_target,
    "direct_logit_attribution": check_direct_logit_attribution,
}


# --- plausible mistakes (the tests prove each check rejects them) ------------------------
def _gae_ignores_dones(rewards, values, dones, last_value, gamma, gae_lambda):
    return compute_gae(rewards, values, torch.zeros_like(dones), last_value, gamma, gae_lambda)


def _gae_no_last_value(rewards, values, dones, last_value, gamma, gae_lambda):
    return compute_gae(rewards, values, dones, torch.zeros_like(last_value), gamma, gae_lambda)


def _gae_forgets_lambda(rewards, values, dones, last_value, gamma, gae_lambda):
    return compute_gae(rewards, values, dones, last_value, gamma, 1.0)


def _gae_mask_only_bootstrap(rewards, values, dones, last_value, gamma, gae_lambda):
    T = rewards.shape[0]
    adv, running = torch.zeros_like(rewards), torch.zeros_like(last_value)
    for t in reversed(range(T)):
        nv = last_value if t == T - 1 else values[t + 1]
        delta = rewards[t] + gamma * nv * (1 - dones[t]) - values[t]
        running = delta + gamma * gae_lambda * running  # the running sum leaks across episodes
        adv[t] = running
    return adv


def _gae_returns_not_advantages(rewards, values, dones, last_value, gamma, gae_lambda):
    return compute_gae(rewards, values, dones, last_value, gamma, gae_lambda) + values


def _loss_unclipped(logp_new, logp_old, advantages, clip_coef):
    return -(torch.exp(logp_new - logp_old) * advantages).mean()


def _loss_max(logp_new, logp_old, advantages, clip_coef):
    ratio = torch.exp(logp_new - logp_old)
    return -torch.max(ratio * advantages, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages).mean()


def _loss_objective_sign(logp_new, logp_old, advantages, clip_coef):
    return -clipped_surrogate_loss(logp_new, logp_old, advantages, clip_coef)


def _loss_no_exp(logp_new, logp_old, advantages, clip_coef):
    ratio = logp_new - logp_old
    return -torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages).mean()


def _loss_always_clipped(logp_new, logp_old, advantages, clip_coef):
    ratio = torch.exp(logp_new - logp_old)
    return -(torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages).mean()


def _td_no_mask(rewards, next_q, terminated, gamma):
    return rewards + gamma * next_q.max(-1).values


def _td_mean(rewards, next_q, terminated, gamma):
    return rewards + gamma * (1 - terminated.float()) * next_q.mean(-1)


def _td_mask_inverted(rewards, next_q, terminated, gamma):
    return rewards + gamma * terminated.float() * next_q.max(-1).values


def _td_no_gamma(rewards, next_q, terminated, gamma):
    return rewards + (1 - terminated.float()) * next_q.max(-1).values


def _dla_summed(h, W, a, b):
    return (h * (W[a] - W[b])).sum(-1)


def _dla_only_a(h, W, a, b):
    return h * W[a]


def _dla_no_activation(h, W, a, b):
    return (W[a] - W[b]).expand_as(h).clone()


WRONG_ANSWERS = {
    "compute_gae": [_gae_ignores_dones, _gae_no_last_value, _gae_forgets_lambda, _gae_mask_only_bootstrap, _gae_returns_not_advantages],
    "clipped_surrogate_loss": [_loss_unclipped, _loss_max, _loss_objective_sign, _loss_no_exp, _loss_always_clipped],
    "td_target": [_td_no_mask, _td_mean, _td_mask_inverted, _td_no_gamma],
    "direct_logit_attribution": [_dla_summed, _dla_only_a, _dla_no_activation],
}
