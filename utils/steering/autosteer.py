"""AutoSteer on tic-tac-toe: an RL agent sets the strengths of ~20 labelled SAE features
while the frozen tiny-ttt LM plays O against a perfect (minimax) X.

    lm, sae = load_model("tiny-ttt"), load_sae("tiny-ttt")
    labels = label_features(lm, sae, n_features=20)          # automatic labels from board predicates
    res = train_autosteer(AutoSteerConfig(), lm, sae, labels.features)
    rec = play_condition(lm, sae, labels.features, "policy", n_games=1000, policy=res.policy)

Observation: the board as 9 numbers (X = +1, O = -1, empty = 0). Action: one strength per
steered feature in the box [-1, 1] (AutoSteer's was about +-0.2 in its API's units); the
steering vector coef * sum_i a_i W_dec[f_i] is added to the residual stream at the SAE's
layer at the position that predicts the move. Rewards per LM move, as in the source:
unparseable -10 (a random legal move is played instead), occupied cell -5 (likewise), and at
the end of the game draw +10, loss -2 (win +10; impossible against minimax).

RL: the course's PPO (`compute_gae` and `ppo_update` from utils.rl.ppo) with a Gaussian
policy over the box (the course's `train_ppo` is for discrete actions).
Evaluation uses the substrate's independent game runner, `utils.lm.rewards.play_vs_minimax`.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from utils.core import CourseError, check_fields, set_seed
from utils.envs import tictactoe as T
from utils.envs.tictactoe import VsMinimax, board_obs
from utils.lm import corpora as C
from utils.lm import rewards as R
from utils.rl.ppo import compute_gae, ppo_update
from utils.steering.analysis import prompt_batches
from utils.steering.hook import feature_delta

CONDITIONS = ("none", "random", "policy")


# ------------------------------------------------------------------ board predicates
def _threats(board: str, side: str) -> set[int]:
    """Empty cells that complete a line of `side` (two of its marks and one empty cell)."""
    out = set()
    for line in T.LINES:
        marks = [board[i] for i in line]
        if marks.count(side) == 2 and marks.count(".") == 1:
            out.add(line[marks.index(".")])
    return out


def predicate_names() -> list[str]:
    return ([f"cell {i} empty" for i in range(9)] + [f"X on {i}" for i in range(9)] + [f"O on {i}" for i in range(9)]
            + [f"must block {i}" for i in range(9)] + [f"O wins at {i}" for i in range(9)])


def board_predicates(board: str) -> list[float]:
    """45 predicates: cell i empty, X on i, O on i, X threatens a line through empty i
    (O must block there), O can win at i."""
    block, win = _threats(board, "X"), _threats(board, "O")
    return ([float(c == ".") for c in board] + [float(c == "X") for c in board] + [float(c == "O") for c in board]
            + [float(i in block) for i in range(9)] + [float(i in win) for i in range(9)])


def situation(board: str) -> str:
    """A coarse label of an O-to-move position for the per-situation analysis."""
    if _threats(board, "O"):
        return "O can win"
    if _threats(board, "X"):
        return "must block"
    return "opening (1 X)" if board.count("X") == 1 else "quiet"


def o_turn_prompts(n_games: int, seed: int) -> list[list[int]]:
    """Move lists at O's turn from weak-play games (ttt_corpus) and from games vs minimax."""
    out = []
    for g in C.ttt_corpus(n_games, seed=seed):
        for k in range(1, len(g["moves"]), 2):
            out.append(g["moves"][:k])
    return out


# -------------------------------------------------------------- steered next-token calls
@torch.no_grad()
def steered_logprobs(lm, sae, prompts: Sequence[str], deltas: Tensor | None) -> Tensor:
    """Next-token log-probs [n, vocab] with deltas [n, d_model] added to the residual stream at
    the SAE's hook, at the last position (None: no steering)."""
    tl, tok = lm.tl, lm.tokenizer
    hook_name = sae.cfg.metadata.hook_name
    device = next(tl.parameters()).device
    out = torch.zeros(len(prompts), tl.cfg.d_vocab)
    for idx, ids in prompt_batches(tl, tok, prompts):
        hooks = []
        if deltas is not None:
            d = deltas[idx].to(device)

            def hook(resid, hook=None, d=d):  # noqa: ARG001
                resid[:, -1] = resid[:, -1] + d.to(resid.dtype)
                return resid

            hooks = [(hook_name, hook)]
        logits = tl.run_with_hooks(ids, fwd_hooks=hooks)[:, -1]
        out[idx] = torch.log_softmax(logits.float(), -1).cpu()
    return out


@torch.no_grad()
def last_token_features(lm, sae, prompts: Sequence[str]) -> Tensor:
    """SAE activations [n, d_sae] at the last token of each prompt."""
    tl, tok = lm.tl, lm.tokenizer
    hook_name = sae.cfg.metadata.hook_name
    out = torch.zeros(len(prompts), sae.W_dec.shape[0])
    for idx, ids in prompt_batches(tl, tok, prompts):
        _, cache = tl.run_with_cache(ids, names_filter=hook_name)
        out[idx] = sae.encode(cache[hook_name][:, -1]).float().cpu()
    return out


# --------------------------------------------------------------- automatic feature labels
@dataclass
class FeatureLabels:
    features: list[int]            # the steered features, best-correlated first
    labels: list[str]              # "must block 4 (r=+0.81)"
    corr: np.ndarray               # [d_sae, n_predicates] Pearson correlation (nan -> 0)
    predicates: list[str]
    n_positions: int


def label_features(lm, sae, n_features: int = 20, n_games: int = 800, seed: int = 7) -> FeatureLabels:
    """Correlate every SAE feature (at the move-predicting token) with 45 board predicates
    on O-to-move positions of weak-play games. Each feature is labelled by its best predicate;
    we keep the strongest feature of each predicate (by |r|) until `n_features` are chosen,
    then the next strongest overall."""
    d_sae = sae.W_dec.shape[0]
    if not 1 <= n_features <= d_sae:
        raise CourseError(f"n_features must be in [1, {d_sae}], got {n_features}")
    positions = o_turn_prompts(n_games, seed)
    prompts = [C.ttt_prompt(m) for m in positions]
    acts = last_token_features(lm, sae, prompts).numpy()
    preds = np.array([board_predicates(T.board_from_moves(m)) for m in positions])
    a = acts - acts.mean(0)
    p = preds - preds.mean(0)
    denom = np.sqrt((a ** 2).sum(0))[:, None] * np.sqrt((p ** 2).sum(0))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, a.T @ p / np.where(denom > 0, denom, 1), 0.0)
    best = np.abs(corr).max(1)
    ranked = [int(f) for f in np.argsort(-best) if best[f] > 0]
    # one feature per predicate first (the strongest), so the agent gets a varied set of handles
    feats, used = [], set()
    for f in ranked:
        j = int(np.abs(corr[f]).argmax())
        if j not in used and len(feats) < n_features:
            feats.append(f)
            used.add(j)
    feats += [f for f in ranked if f not in feats][: n_features - len(feats)]
    names = predicate_names()
    labels = []
    for f in feats:
        j = int(np.abs(corr[f]).argmax())
        labels.append(f"{names[j]} (r={corr[f, j]:+.2f})")
    return FeatureLabels(feats, labels, corr, names, len(positions))


# ---------------------------------------------------------------------- the RL agent
class GaussianPolicy(nn.Module):
    """mean(board) [B, k] in the box, a state-independent log-std, and a critic V(board).

    `state_independent=True` is the constant-strength control: the mean is one learned vector
    that ignores the board (`dist_fn(mean, log_std, obs)`, by default
    `utils.steering.analysis.constant_dist`); the critic still sees the board, so the control
    gets the same PPO, the same budget and the same value baseline, and only loses the ability
    to steer differently in different positions."""

    def __init__(self, n_features: int, hidden: int = 64, log_std: float = -0.7,
                 state_independent: bool = False, dist_fn=None):
        super().__init__()
        self.n_features, self.state_independent = n_features, state_independent
        if state_independent:
            from utils.steering.analysis import constant_dist

            self.mean = nn.Parameter(torch.zeros(n_features))
            self.dist_fn = dist_fn or constant_dist
        else:
            self.actor = nn.Sequential(nn.Linear(9, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                       nn.Linear(hidden, n_features))
            nn.init.zeros_(self.actor[-1].weight)
            nn.init.zeros_(self.actor[-1].bias)
        self.log_std = nn.Parameter(torch.full((n_features,), log_std))
        self.critic = nn.Sequential(nn.Linear(9, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                    nn.Linear(hidden, 1))

    def dist(self, obs: Tensor) -> torch.distributions.Normal:
        if self.state_independent:
            return self.dist_fn(self.mean, self.log_std, obs)
        return torch.distributions.Normal(self.actor(obs), self.log_std.exp().expand(len(obs), -1))

    def value(self, obs: Tensor) -> Tensor:
        return self.critic(obs)[..., 0]

    def mean_action(self, obs: Tensor) -> Tensor:
        if self.state_independent:
            return self.mean.clamp(-1, 1).expand(len(obs), -1)
        return self.actor(obs).clamp(-1, 1)


@dataclass
class AutoSteerConfig:
    coef: float = 4.0              # residual-stream units per unit of strength (W_dec rows have norm 1)
    n_envs: int = 64               # games played in parallel
    n_steps: int = 8               # LM moves per env per rollout
    iterations: int = 30
    n_epochs: int = 4
    n_minibatches: int = 4
    lr: float = 3e-3
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    max_grad_norm: float = 0.5
    hidden: int = 64
    state_independent: bool = False   # True: the constant-strength control (same PPO, same budget)
    seed: int = 0

    def validate(self) -> "AutoSteerConfig":
        check_fields(self, positive_int=("n_envs", "n_steps", "iterations", "n_epochs", "n_minibatches", "hidden"),
                     positive=("coef", "lr", "clip_coef"), unit=("gamma", "gae_lambda"), nonneg=("ent_coef", "vf_coef", "max_grad_norm"),
                     nonneg_int=("seed",))
        return self


class SteeredTicTacToe(VsMinimax):
    """The tic-tac-toe environment (`utils.envs.tictactoe.VsMinimax`) whose action is a vector
    of feature strengths: the steered LM's greedy next token is the move that is played."""

    n_actions = None  # continuous: one strength in [-1, 1] per steered feature

    def __init__(self, lm, sae, features: Sequence[int], coef: float, n_envs: int, seed: int = 0):
        super().__init__(n_envs, seed=seed)
        self.lm, self.sae, self.features, self.coef = lm, sae, torch.tensor(list(features)), coef

    def step(self, strengths: Tensor):
        """Play one steered LM move in every game (then X's reply): (obs, rewards, dones, truncated, info)."""
        prompts = [C.ttt_prompt(g) for g in self.games]
        deltas = self.coef * feature_delta(self.sae, self.features, strengths.clamp(-1, 1))
        tokens = steered_logprobs(self.lm, self.sae, prompts, deltas).argmax(-1)
        moves = [R.parse_move(self.lm.tokenizer.decode([int(t)])) for t in tokens]
        return super().step(torch.tensor([T.UNPARSEABLE if m is None else m for m in moves]))


@dataclass
class AutoSteerResult:
    policy: GaussianPolicy
    log: dict[str, list]
    config: AutoSteerConfig
    seconds: float


def train_autosteer(cfg: AutoSteerConfig, lm, sae, features: Sequence[int], progress: bool = True,
                    dist_fn=None, desc: str | None = None) -> AutoSteerResult:
    """PPO over feature strengths; `cfg.state_independent` trains the constant-strength control
    (with `dist_fn` its distribution, e.g. the learner's `constant_dist`)."""
    cfg.validate()
    if len(features) == 0:
        raise CourseError("give at least one feature to steer")
    set_seed(cfg.seed)
    env = SteeredTicTacToe(lm, sae, features, cfg.coef, cfg.n_envs, seed=cfg.seed)
    policy = GaussianPolicy(len(features), cfg.hidden, state_independent=cfg.state_independent, dist_fn=dist_fn)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)
    log = {k_: [] for k_ in ("games", "draw_rate", "mean_step_reward", "std", "seconds")}
    start = time.perf_counter()
    obs = env.reset()
    bar = tqdm(range(cfg.iterations), desc=desc or "AutoSteer PPO", disable=not progress, mininterval=1.0)
    for it in bar:
        n_fin = len(env.finished)
        ro, obs = _rollout(policy, env, obs, cfg.n_steps)
        adv = compute_gae(ro["rew"], ro["val"], ro["done"], ro["last_v"], cfg.gamma, cfg.gae_lambda)
        b_obs, b_act = ro["obs"].reshape(-1, 9), ro["act"].reshape(-1, len(features))

        def evaluate(mb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            d = policy.dist(b_obs[mb])
            return d.log_prob(b_act[mb]).sum(-1), d.entropy().sum(-1).mean(), policy.value(b_obs[mb])

        ppo_update(evaluate, ro["logp"].reshape(-1), adv.reshape(-1), (adv + ro["val"]).reshape(-1), opt,
                   policy.parameters(), n_epochs=cfg.n_epochs, minibatch_size=cfg.n_steps * cfg.n_envs // cfg.n_minibatches,
                   clip_coef=cfg.clip_coef, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm)
        fin = env.finished[n_fin:]
        log["games"].append(len(env.finished))
        log["draw_rate"].append(float(np.mean([f["outcome"] == "draw" for f in fin])) if fin else float("nan"))
        log["mean_step_reward"].append(float(ro["rew"].mean()))
        log["std"].append(float(policy.log_std.detach().exp().mean()))
        log["seconds"].append(time.perf_counter() - start)
        if progress:
            bar.set_postfix(draw=f"{log['draw_rate'][-1]:.2f}", std=f"{log['std'][-1]:.2f}")
    bar.close()
    policy.eval()
    return AutoSteerResult(policy, log, cfg, time.perf_counter() - start)


@torch.no_grad()
def _rollout(policy: GaussianPolicy, env: SteeredTicTacToe, obs: Tensor, n_steps: int) -> tuple[dict[str, Tensor], Tensor]:
    """n_steps steered moves in every game: buffers [T, N, ...] and the next observation."""
    T_, N, k = n_steps, env.n_envs, len(env.features)
    ro = {"obs": torch.zeros(T_, N, 9), "act": torch.zeros(T_, N, k)}
    ro.update({key: torch.zeros(T_, N) for key in ("logp", "rew", "done", "val")})
    for t in range(T_):
        d = policy.dist(obs)
        a = d.sample()
        ro["obs"][t], ro["act"][t], ro["logp"][t], ro["val"][t] = obs, a, d.log_prob(a).sum(-1), policy.value(obs)
        obs, ro["rew"][t], ro["done"][t], _, _ = env.step(a)
    ro["last_v"] = policy.value(obs)
    return ro, obs


# --------------------------------------------------------------------------- evaluation
def move_chooser(lm, sae, features: Sequence[int], condition: str, coef: float,
                 policy: GaussianPolicy | None = None, seed: int = 0, record: list | None = None) -> R.MoveChooser:
    """A `play_vs_minimax` move chooser: no steering, uniform random strengths in the box
    (fresh each move), or the trained policy's mean strengths. `record` collects (board, strengths)."""
    if condition not in CONDITIONS:
        raise CourseError(f"unknown condition {condition!r}: use one of {', '.join(CONDITIONS)}")
    if condition == "policy" and policy is None:
        raise CourseError("condition 'policy' needs a trained policy")
    feats = torch.tensor(list(features))
    g = torch.Generator().manual_seed(seed)

    def choose(prompts: list[str]) -> list[str]:
        boards = [T.board_from_moves(C.parse_moves(p)) for p in prompts]
        if condition == "none":
            deltas, a = None, torch.zeros(len(prompts), len(feats))
        else:
            if condition == "random":
                a = torch.rand(len(prompts), len(feats), generator=g) * 2 - 1
            else:
                with torch.no_grad():
                    a = policy.mean_action(torch.tensor([board_obs(b) for b in boards]))
            deltas = coef * feature_delta(sae, feats, a)
        if record is not None:
            record.extend(zip(boards, a.tolist()))
        ids = steered_logprobs(lm, sae, prompts, deltas).argmax(-1)
        return [lm.tokenizer.decode([int(i)]) for i in ids]

    return choose


def play_condition(lm, sae, features: Sequence[int], condition: str, n_games: int, coef: float = 4.0,
                   policy: GaussianPolicy | None = None, seed: int = 0,
                   record: list | None = None) -> list[R.GameRecord]:
    return R.play_vs_minimax(move_chooser(lm, sae, features, condition, coef, policy, seed, record), n_games,
                             seed=seed, lm_side="O")


class FixedStrengths:
    """The same strengths [k] on every board: a constant-steering 'policy' for `play_condition`
    (it has only `mean_action`, which is all evaluation uses)."""

    def __init__(self, strengths):
        v = torch.as_tensor(strengths, dtype=torch.float32).flatten()
        if not torch.isfinite(v).all():
            raise CourseError("FixedStrengths: strengths must be finite numbers")
        self.strengths = v.clamp(-1, 1)

    def mean_action(self, obs: Tensor) -> Tensor:
        return self.strengths.expand(len(obs), -1)


def search_constant(draw_rate, candidates: dict, n_games: int, seed: int) -> tuple[str, Tensor, dict]:
    """The constant steering vector with the highest draw rate among `candidates` (name ->
    strengths [k]), each played for `n_games` DISCOVERY games with game seed `seed`:
    `draw_rate(strengths, n_games, seed) -> float`. Returns (best name, its strengths, every
    candidate's discovery rate). Evaluate the winner on other games: its discovery rate is
    biased upwards by the selection."""
    if not candidates:
        raise CourseError("search_constant needs at least one candidate vector")
    rates = {name: float(draw_rate(v, n_games, seed)) for name, v in candidates.items()}
    best = max(rates, key=rates.get)
    return best, torch.as_tensor(candidates[best], dtype=torch.float32), rates


def game_rates(records: Sequence[R.GameRecord]) -> dict[str, tuple[int, int]]:
    """(count, total) for the draw rate (per game) and the illegal-move rate (per LM move)."""
    return {"draw": (sum(r.outcome == "draw" for r in records), len(records)),
            "illegal move": (sum(r.unparseable + r.occupied for r in records), sum(r.lm_moves for r in records)),
            "game with an illegal move": (sum((r.unparseable + r.occupied) > 0 for r in records), len(records))}


def strengths_by_situation(record: Sequence[tuple[str, list[float]]]) -> tuple[list[str], np.ndarray, list[int]]:
    """(situations, mean strength [situations, features], counts) from a policy's record."""
    by: dict[str, list] = defaultdict(list)
    for board, a in record:
        by[situation(board)].append(a)
    names = [s for s in ("opening (1 X)", "quiet", "must block", "O can win") if s in by]
    return names, np.array([np.mean(by[s], 0) for s in names]), [len(by[s]) for s in names]

