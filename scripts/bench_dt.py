"""Benchmark: the course's decision transformer versus Hugging Face's DecisionTransformerModel.

Chapter 07 trains many small DTs (every variant, every seed) and a learner waits on them. The
library a user would otherwise pick is `transformers.DecisionTransformerModel` (GPT-2 blocks;
states and actions as float vectors, returns as a [B, T, 1] float, timesteps embedded). Both are
built at the same size (layers, heads, d_model, d_mlp, context) and trained with the same
optimiser, batch and loss (cross-entropy on the action predicted at each state, real steps only)
on the same memory-corridor data, on one torch thread, in one run. Printed: parameters, seconds
per training step (best of `--repeats` alternating runs), the ratio, and each model's achieved
return when asking for +1 and -1 after training (a check that both are working DTs; the
chapter's bonus 4 compares full conditioning curves over seeds).

    python scripts/bench_dt.py [--steps 200] [--episodes 2000] [--batch 64] [--repeats 2] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from utils.dt import tasks  # noqa: E402
from utils.dt.train import DTTrainConfig, dt_loss, train_dt  # noqa: E402
from utils.envs.memory_corridor import MemoryCorridor  # noqa: E402


def hf_model(ref, seed: int):
    from transformers import DecisionTransformerConfig, DecisionTransformerModel
    c = ref.dt_cfg
    torch.manual_seed(seed)
    cfg = DecisionTransformerConfig(state_dim=c.n_states, act_dim=c.n_actions, hidden_size=c.d_model,
                                    n_layer=c.n_layers, n_head=c.n_heads, n_inner=c.d_mlp,
                                    max_ep_len=c.context_len, n_positions=3 * c.context_len,
                                    action_tanh=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DecisionTransformerModel(cfg)


def hf_inputs(tokens: torch.Tensor, n_states: int, n_actions: int):
    b, t, _ = tokens.shape
    states = F.one_hot(tokens[..., 1], n_states).float()
    actions = F.one_hot(tokens[..., 2].clamp_max(n_actions - 1), n_actions).float()
    return dict(states=states, actions=actions, returns_to_go=tokens[..., :1].float(),
                timesteps=torch.arange(t).expand(b, t), attention_mask=torch.ones(b, t, dtype=torch.long))


def train_hf(model, tokens, mask, steps, batch, lr, seed, n_states, n_actions):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(tokens), (batch,), generator=g)
        out = model(**hf_inputs(tokens[idx], n_states, n_actions))
        loss = dt_loss(out.action_preds, tokens[idx][..., 2], mask[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@torch.no_grad()
def hf_return(model, request: float, n: int, seed: int, n_states: int, n_actions: int) -> float:
    env = MemoryCorridor(n, **tasks.MEMORY, seed=seed)
    obs = env.reset(seed=seed)
    rows, ret, done = [], torch.zeros(n), torch.zeros(n, dtype=torch.bool)
    for _ in range(env.max_steps):
        if done.all():
            break
        rows.append(torch.stack([(request - ret).round().long(), obs, torch.zeros(n, dtype=torch.long)], -1))
        tokens = torch.stack(rows, 1)
        a = model(**hf_inputs(tokens, n_states, n_actions)).action_preds[:, -1].argmax(-1)
        rows[-1][:, 2] = a
        obs, r, term, trunc, _ = env.step(a)
        ret += r
        done |= term | trunc
    return float(ret.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = tasks.memory_data(args.episodes, seed=args.seed)
    times = {"course DecisionTransformer": [], "HF DecisionTransformerModel": []}
    for _ in range(args.repeats):
        ours = tasks.make_model("memory", seed=args.seed)
        t = time.perf_counter()
        train_dt(ours, data["tokens"], data["mask"], DTTrainConfig(steps=args.steps, batch_size=args.batch,
                                                                   seed=args.seed), desc="course DT")
        times["course DecisionTransformer"].append((time.perf_counter() - t) / args.steps)
        c = ours.dt_cfg
        hf = hf_model(ours, args.seed)
        t = time.perf_counter()
        train_hf(hf, data["tokens"], data["mask"], args.steps, args.batch, 3e-3, args.seed, c.n_states, c.n_actions)
        times["HF DecisionTransformerModel"].append((time.perf_counter() - t) / args.steps)
    n_params = {"course DecisionTransformer": ours.n_params(), "HF DecisionTransformerModel":
                sum(p.numel() for p in hf.parameters())}
    curve = {"course DecisionTransformer": [float(v.mean()) for v in
                                            tasks.memory_curve(ours, [1, -1], n=200, seed=7).values()],
             "HF DecisionTransformerModel": [hf_return(hf, r, 200, 7, c.n_states, c.n_actions) for r in (1, -1)]}
    print(f"memory corridor, {args.episodes} episodes, {args.steps} steps of batch {args.batch}, 1 thread")
    print(f"{'model':<30} {'params':>8} {'ms/step (best)':>15} {'return asking +1':>17} {'asking -1':>10}")
    for k, v in times.items():
        print(f"{k:<30} {n_params[k]:>8} {1000 * min(v):>15.1f} {curve[k][0]:>17.2f} {curve[k][1]:>10.2f}")
    ratio = min(times["HF DecisionTransformerModel"]) / min(times["course DecisionTransformer"])
    print(f"HF time per step / course time per step: {ratio:.2f}")


if __name__ == "__main__":
    main()
