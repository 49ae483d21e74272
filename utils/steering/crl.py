"""Control RL (CRL): PPO trains a policy that, at every generated token, picks one SAE
feature and adds c * W_dec[feature] to the frozen LM's residual stream.

    task = make_task("qa")                                  # or "sentiment"
    lm, sae = load_model(task.model), load_sae(task.model)
    train, test = task.items("train", 512, seed=0), task.items("test", 400, seed=0)
    res = train_crl(CRLConfig(task="qa", mask="active"), lm, sae, task, train)
    ev = evaluate(lm, sae, task, test, "policy", policy=res.policy, coef=res.config.coef, mask="active")

One episode = one prompt; one step = one generated token. State: the residual vector at
the steering hook for the current (last) position, read *before* steering it. Action: a
feature index (categorical; optionally restricted by AFM-active). Reward: the task's
verifiable reward of the whole completion, given at its last token. The LM is greedy, so
the policy is the only source of randomness and "steering changed the outcome" is exact.

Design choices the source left open (see the chapter): one feature per token (not top-k);
no "no-op" action; the steering of earlier tokens stays in place while later tokens are
generated (as with a KV cache); generation re-runs the whole sequence each step (no KV
cache), which is exact and cheap for short completions.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError, check_fields, set_seed
from utils.lm import corpora as C
from utils.lm import rewards as R
from utils.lm.artifacts import QA_WORLD
from utils.lm.models import generate, single_thread
from utils.rl.ppo import compute_gae, ppo_update
from utils.steering.analysis import length_batches
from utils.steering.hook import steer_resid
from utils.steering.policy import MASK_MODES, Critic, FeaturePolicy, masked_categorical

CHOOSERS = ("none", "random", "random_active", "policy")


# ---------------------------------------------------------------------------- tasks
@dataclass
class SteerTask:
    """A verifiable task: prompts, a reward of (completion, item) and a success predicate."""
    name: str
    model: str                                   # embedded model it runs on offline
    n_new: int                                   # tokens generated per prompt (= steps per episode)
    make_items: Callable[[str, int, int], list[dict]]
    reward: Callable[[str, dict], float]
    success: Callable[[str, dict], bool]
    description: str = ""

    def items(self, split: str, n: int, seed: int = 0) -> list[dict]:
        if split not in ("train", "test"):
            raise CourseError(f"split must be 'train' or 'test', got {split!r}")
        if n <= 0:
            raise CourseError(f"need n > 0 items, got {n}")
        return self.make_items(split, n, seed)


def _qa_world():
    return C.qa_world(**QA_WORLD)


def qa_items(split: str, n: int, seed: int) -> list[dict]:
    """Questions about a disjoint half of the entities for each split (even / odd index), so
    neither the policy nor a fine-tuned model can learn the test facts: both can only learn
    how to answer. Fresh option orders; `count` = the entity's training exposures (0 = unseen)."""
    world = _qa_world()
    keep = {e for i, e in enumerate(world.entities) if i % 2 == (0 if split == "train" else 1)}
    out: list[dict] = []
    rep = 0
    while len(out) < n:
        pool = [q for q in C.qa_eval_set(world, seed=1000 * (split == "test") + 17 * seed + rep, per_entity=1)
                if q["entity"] in keep]
        random.Random(seed + rep).shuffle(pool)
        out += pool
        rep += 1
    return out[:n]


def qa_in_options(completion: str, item: dict) -> bool:
    ans = R.qa_answer(completion)
    return ans is not None and ans in item["prompt"].split("options:")[1]


def sentiment_items(split: str, n: int, seed: int) -> list[dict]:
    """The first sentence of a held-out review (any sentiment) as the prompt."""
    docs = C.review_corpus(n, seed=500 + 2 * seed + (split == "test"), toxic_fraction=0.0)
    return [{"prompt": d["text"].split(". ")[0].rstrip(".") + ".", "sentiment": d["sentiment"]} for d in docs]


TASKS: dict[str, SteerTask] = {
    "qa": SteerTask(
        "qa", "tiny-qa", 1, qa_items,
        reward=lambda c, it: float(R.qa_correct(c, it["answer"])),
        success=lambda c, it: R.qa_correct(c, it["answer"]),
        description="four-way multiple choice about invented entities; reward 1 if the answer is right"),
    "sentiment": SteerTask(
        "sentiment", "tiny-reviews", 10, sentiment_items,
        reward=lambda c, it: R.sentiment_score(c),
        success=lambda c, it: R.sentiment_score(c) > 0,
        description="continue a review's first sentence; reward = lexicon sentiment of the continuation in [-1, 1]"),
}


def make_task(name: str, model: str | None = None) -> SteerTask:
    """A task by name; `model` swaps the LM (e.g. "gemma-2-2b" in the gpu profile)."""
    if name not in TASKS:
        raise CourseError(f"unknown task {name!r}: use one of {', '.join(TASKS)}")
    task = TASKS[name]
    return task if model is None else SteerTask(**{**asdict_shallow(task), "model": model})


def asdict_shallow(obj) -> dict:
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}


# ----------------------------------------------------------------- steered generation
@dataclass
class Rollout:
    items: list[dict]
    completions: list[str]
    tokens: list[list[int]]        # generated token ids per item
    obs: Tensor                    # [B, n_new, d_model] residual at the hook, before steering
    active: Tensor                 # [B, n_new, d_sae] bool: SAE features active at that token
    actions: Tensor                # [B, n_new] chosen feature (-1: none)
    alive: Tensor                  # [B, n_new] bool: the token is part of the completion (before EOS)
    rewards: np.ndarray            # [B] task reward of each completion
    success: np.ndarray            # [B] bool


Chooser = Callable[[Tensor, Tensor], Tensor]   # (obs [b, d], active [b, F] bool) -> features [b]


def hook_name_of(sae) -> str:
    return sae.cfg.metadata.hook_name


@torch.no_grad()
def steered_generate(lm, sae, task: SteerTask, items: Sequence[dict], choose: Chooser, coef: float,
                     batch_size: int | None = None) -> Rollout:
    """Generate task.n_new greedy tokens per item with the chooser steering every token. Prompts
    of one token length run together, `batch_size` at a time (None: as many as keep the logits
    under analysis.MEMORY_BUDGET_BYTES, see analysis.length_batches)."""
    tl, tok = lm.tl, lm.tokenizer
    hook_name = hook_name_of(sae)
    if hook_name not in tl.hook_dict:
        raise CourseError(f"the SAE's hook {hook_name!r} is not a hook point of {lm.name}")
    if not items:
        raise CourseError("no items to generate for")
    n_new, d_model, d_sae = task.n_new, sae.W_dec.shape[1], sae.W_dec.shape[0]
    B = len(items)
    enc = [tok(it["prompt"])["input_ids"] for it in items]
    obs = torch.zeros(B, n_new, d_model)
    active = torch.zeros(B, n_new, d_sae, dtype=torch.bool)
    actions = torch.full((B, n_new), -1, dtype=torch.long)
    gen = torch.zeros(B, n_new, dtype=torch.long)
    device = next(tl.parameters()).device
    eos = tok.eos_token_id
    # prompts of equal token length run together: no padding, so positions are exact
    for idx in length_batches(tl, [len(e) for e in enc], n_new, batch_size=batch_size):
        length = len(enc[idx[0]])
        ids = torch.tensor([enc[i] for i in idx], device=device)
        feats = torch.full((len(idx), length + n_new), -1, dtype=torch.long, device=device)
        for t in range(n_new):
            T = ids.shape[1]

            def hook(resid: Tensor, hook=None, t=t, T=T) -> Tensor:  # noqa: ARG001
                x = resid[:, -1].detach()
                act = sae.encode(x.to(sae.W_dec.dtype)) > 0
                f = choose(x.float().cpu(), act.cpu()).to(device)
                feats[:, T - 1] = f
                obs[idx, t] = x.float().cpu()
                active[idx, t] = act.cpu()
                actions[idx, t] = f.cpu()
                return steer_resid(resid, sae, feats[:, :T], coef)

            logits = tl.run_with_hooks(ids, fwd_hooks=[(hook_name, hook)])[:, -1]
            nxt = logits.argmax(-1)
            gen[idx, t] = nxt.cpu()
            ids = torch.cat([ids, nxt[:, None]], 1)
    # alive: tokens up to and including the first EOS
    is_eos = gen == eos
    after = (is_eos.cumsum(1) - is_eos.long()) > 0
    alive = ~after
    tokens, completions = [], []
    for b in range(B):
        t_ids = gen[b][alive[b]].tolist()
        tokens.append(t_ids)
        completions.append(tok.decode(t_ids, skip_special_tokens=True))
    rewards = np.array([task.reward(c, it) for c, it in zip(completions, items)], dtype=float)
    success = np.array([bool(task.success(c, it)) for c, it in zip(completions, items)])
    return Rollout(list(items), completions, tokens, obs, active, actions, alive, rewards, success)


# -------------------------------------------------------------------------- choosers
def no_steering() -> Chooser:
    return lambda obs, act: torch.full((len(obs),), -1, dtype=torch.long)


def random_feature(d_sae: int, active_only: bool = False, seed: int = 0) -> Chooser:
    """Uniform over the whole dictionary, or (active_only) over the features active at the token."""
    g = torch.Generator().manual_seed(seed)

    def choose(obs: Tensor, act: Tensor) -> Tensor:
        logits = torch.zeros(len(obs), d_sae)
        dist = masked_categorical(logits, act if active_only else None)
        return torch.multinomial(dist.probs, 1, generator=g)[:, 0]

    return choose


def policy_chooser(policy: FeaturePolicy, mask: str, greedy: bool = False, seed: int = 0) -> Chooser:
    check_mask(mask)
    g = torch.Generator().manual_seed(seed)

    def choose(obs: Tensor, act: Tensor) -> Tensor:
        dist = masked_categorical(policy(obs), act if mask == "active" else None)
        if greedy:
            return dist.probs.argmax(-1)
        return torch.multinomial(dist.probs, 1, generator=g)[:, 0]

    return choose


def check_mask(mask: str) -> None:
    if mask not in MASK_MODES:
        raise CourseError(f"unknown mask {mask!r}: use 'none' (all features) or 'active' (AFM-active)")


# -------------------------------------------------------------------------- training
@dataclass
class CRLConfig:
    task: str = "qa"
    mask: str = "active"          # "active" = AFM-active; "none" = the whole dictionary
    coef: float = 8.0             # steering strength c (in residual-stream units; W_dec rows have norm 1)
    iterations: int = 20
    batch_prompts: int = 64       # episodes (prompts) per PPO iteration
    n_epochs: int = 4
    n_minibatches: int = 4
    lr: float = 3e-3
    clip_coef: float = 0.5        # the "high epsilon" regime: a wide PPO clip range
    ent_coef: float = 0.003
    vf_coef: float = 0.5
    gamma: float = 1.0
    gae_lambda: float = 0.95
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (128,)
    seed: int = 0

    @property
    def samples(self) -> int:
        return self.iterations * self.batch_prompts

    def validate(self) -> "CRLConfig":
        check_mask(self.mask)
        if self.task not in TASKS:
            raise CourseError(f"unknown task {self.task!r}: use one of {', '.join(TASKS)}")
        check_fields(self, positive_int=("iterations", "batch_prompts", "n_epochs", "n_minibatches"),
                     positive=("lr", "clip_coef"), finite=("coef",), unit=("gamma", "gae_lambda"),
                     nonneg=("ent_coef", "vf_coef", "max_grad_norm"), nonneg_int=("seed",), int_tuple=("hidden",))
        return self


@dataclass
class CRLResult:
    policy: FeaturePolicy
    critic: Critic
    log: dict[str, list]
    config: CRLConfig
    seconds: float


def train_crl(cfg: CRLConfig, lm, sae, task: SteerTask, train_items: Sequence[dict], progress: bool = True,
              desc: str | None = None) -> CRLResult:
    """PPO on the task reward. The LM and SAE are only read; their weights never change."""
    cfg.validate()
    if len(train_items) < cfg.batch_prompts:
        raise CourseError(f"need at least batch_prompts={cfg.batch_prompts} training items, got {len(train_items)}")
    set_seed(cfg.seed)
    d_model, d_sae = sae.W_dec.shape[1], sae.W_dec.shape[0]
    policy, critic = FeaturePolicy(d_model, d_sae, cfg.hidden), Critic(d_model, cfg.hidden)
    params = list(policy.parameters()) + list(critic.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, eps=1e-5)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    log = {k: [] for k in ("samples", "reward", "success", "entropy", "clip_frac", "seconds")}
    start = time.perf_counter()
    bar = tqdm(range(cfg.iterations), desc=desc or f"CRL {cfg.task} mask={cfg.mask}", disable=not progress,
               mininterval=1.0)
    for it in bar:
        if len(order) < cfg.batch_prompts:
            more = list(range(len(train_items)))
            rng.shuffle(more)
            order += more
        batch = [train_items[i] for i in order[: cfg.batch_prompts]]
        del order[: cfg.batch_prompts]
        policy.eval()
        ro = steered_generate(lm, sae, task, batch, policy_chooser(policy, cfg.mask, seed=cfg.seed * 100003 + it),
                              cfg.coef)
        b_obs, b_act, b_logp, b_mask, b_adv, b_ret = _ppo_batch(ro, policy, critic, cfg)
        n = len(b_obs)
        policy.train()

        def evaluate(mb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            dist = masked_categorical(policy(b_obs[mb]), b_mask[mb] if b_mask is not None else None)
            return dist.log_prob(b_act[mb]), _entropy(dist), critic(b_obs[mb])

        stats = ppo_update(evaluate, b_logp, b_adv, b_ret, opt, params, n_epochs=cfg.n_epochs,
                           minibatch_size=max(1, n // cfg.n_minibatches), clip_coef=cfg.clip_coef, vf_coef=cfg.vf_coef,
                           ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm)
        log["samples"].append((it + 1) * cfg.batch_prompts)
        log["reward"].append(float(ro.rewards.mean()))
        log["success"].append(float(ro.success.mean()))
        log["entropy"].append(stats["mean_entropy"])
        log["clip_frac"].append(stats["clip_frac"])
        log["seconds"].append(time.perf_counter() - start)
        if progress:
            bar.set_postfix(reward=f"{log['reward'][-1]:.3f}", H=f"{log['entropy'][-1]:.2f}")
    bar.close()
    policy.eval()
    critic.eval()
    return CRLResult(policy, critic, log, cfg, time.perf_counter() - start)


@torch.no_grad()
def _ppo_batch(ro: "Rollout", policy: FeaturePolicy, critic: Critic, cfg: CRLConfig) -> tuple:
    """Flat PPO batch of the generated tokens that were alive: obs, actions, old log-probs,
    masks, GAE advantages and returns (the reward arrives at each episode's last token)."""
    B, Tn = ro.actions.shape
    alive = ro.alive
    last = alive.sum(1) - 1                  # index of each episode's last token
    rew = torch.zeros(Tn, B)
    done = torch.zeros(Tn, B)
    rew[last, torch.arange(B)] = torch.tensor(ro.rewards, dtype=torch.float32)
    done[last, torch.arange(B)] = 1.0
    mask = ro.active if cfg.mask == "active" else None
    flat_obs = ro.obs.reshape(B * Tn, -1)
    flat_mask = mask.reshape(B * Tn, -1) if mask is not None else None
    flat_act = ro.actions.reshape(-1)
    # the old log-probs come from the same masked categorical the update will use
    logp_old = masked_categorical(policy(flat_obs), flat_mask).log_prob(flat_act)
    values = critic(flat_obs).reshape(B, Tn).T
    adv = compute_gae(rew, values, done, torch.zeros(B), cfg.gamma, cfg.gae_lambda)
    ret = adv + values
    keep = alive.reshape(-1)
    b_obs, b_act, b_logp = flat_obs[keep], flat_act[keep], logp_old[keep]
    b_mask = flat_mask[keep] if flat_mask is not None else None
    b_adv, b_ret = adv.T.reshape(-1)[keep], ret.T.reshape(-1)[keep]
    return b_obs, b_act, b_logp, b_mask, b_adv, b_ret


def _entropy(dist: torch.distributions.Categorical) -> Tensor:
    # Categorical.entropy() gives nan where a logit is -inf (0 * -inf): use only the allowed entries
    p = dist.probs
    logp = torch.where(p > 0, dist.logits, torch.zeros_like(p))
    return -(p * logp).sum(-1).mean()


# ------------------------------------------------------------------------ evaluation
def evaluate(lm, sae, task: SteerTask, items: Sequence[dict], chooser: str, coef: float = 8.0,
             policy: FeaturePolicy | None = None, mask: str = "active", greedy: bool = False,
             seed: int = 0) -> Rollout:
    """Run one condition on `items`: "none", "random" (uniform feature), "random_active"
    (uniform over the active features) or "policy" (sampled from the trained policy, or its
    argmax with greedy=True)."""
    d_sae = sae.W_dec.shape[0]
    if chooser == "none":
        ch = no_steering()
    elif chooser == "random":
        ch = random_feature(d_sae, False, seed)
    elif chooser == "random_active":
        ch = random_feature(d_sae, True, seed)
    elif chooser == "policy":
        if policy is None:
            raise CourseError("chooser='policy' needs a trained policy")
        ch = policy_chooser(policy, mask, greedy, seed)
    else:
        raise CourseError(f"unknown chooser {chooser!r}: use one of {', '.join(CHOOSERS)}")
    return steered_generate(lm, sae, task, items, ch, coef)


def feature_counts(ro: Rollout) -> dict[int, int]:
    """How often each feature was chosen on the completions' tokens."""
    a = ro.actions[ro.alive]
    a = a[a >= 0]
    vals, counts = torch.unique(a, return_counts=True)
    order = torch.argsort(counts, descending=True)
    return {int(vals[i]): int(counts[i]) for i in order}


def changed_outcomes(base: Rollout, steered: Rollout) -> list[dict]:
    """Items whose completion differs with steering: the first token that differs, the
    feature chosen there, and the rewards before / after."""
    out = []
    for b, (t0, t1) in enumerate(zip(base.tokens, steered.tokens)):
        if t0 == t1:
            continue
        pos = next((i for i, (x, y) in enumerate(zip(t0, t1)) if x != y), min(len(t0), len(t1)))
        out.append({"item": b, "prompt": base.items[b]["prompt"], "before": base.completions[b],
                    "after": steered.completions[b], "first_diff": pos,
                    "feature": int(steered.actions[b, min(pos, steered.actions.shape[1] - 1)]),
                    "reward_before": float(base.rewards[b]), "reward_after": float(steered.rewards[b])})
    return out


# -------------------------------------------------------------- plain fine-tuning baseline
def finetune_answers(lm, items: Sequence[dict], task: SteerTask, lr: float = 1e-3, batch_size: int = 16,
                     seed: int = 0, progress: bool = True):
    """Supervised fine-tuning of a *copy* of the LM on `items` (prompt -> gold answer), each item
    seen once (so the sample count equals the RL run's prompts). Loss on the answer token only.
    Returns the fine-tuned HF model. Only the QA task has gold answers."""
    if task.name != "qa":
        raise CourseError("finetune_answers needs gold answers: only the 'qa' task has them")

    set_seed(seed)
    model = copy.deepcopy(lm.hf).train()
    tok = lm.tokenizer
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    device = model.device
    with single_thread():
        for s in tqdm(range(0, len(order), batch_size), desc="fine-tuning (SFT)", disable=not progress, mininterval=1.0):
            batch = [items[i] for i in order[s: s + batch_size]]
            enc = tok([b["prompt"] for b in batch], return_tensors="pt", padding=True, padding_side="left")
            ans = torch.tensor([tok(" " + b["answer"], add_special_tokens=False)["input_ids"][0] for b in batch])
            pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                           position_ids=pos.to(device)).logits[:, -1]
            loss = torch.nn.functional.cross_entropy(logits.float(), ans.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def evaluate_hf(model, tokenizer, task: SteerTask, items: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rewards, success, completions) of an unsteered HF model, greedy (for the SFT baseline)."""
    comps = generate(model, tokenizer, [it["prompt"] for it in items], max_new_tokens=task.n_new, greedy=True)
    return (np.array([task.reward(c, it) for c, it in zip(comps, items)]),
            np.array([bool(task.success(c, it)) for c, it in zip(comps, items)]), comps)

