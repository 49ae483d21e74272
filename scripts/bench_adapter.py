"""The adapter's overhead (chapter 12), side by side in one run:

- a Stable-Baselines3 PPO policy: SB3's own forward path, the adapted forward, `run_with_cache`
  over every hook, and the library-free alternative (plain torch forward hooks recording every
  submodule's output);
- an sb3-contrib RecurrentPPO policy, one step of a batch from a hidden state: sb3-contrib's own
  `forward` (actor and critic LSTMs, deterministic action), the adapted `step` (the same two LSTMs,
  logits and value), and `run_with_cache` over packed step inputs (every hook, the hidden state
  included).

    python scripts/bench_adapter.py [--batch 1024] [--reps 200]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.adventure.doorkey import blank_model  # noqa: E402
from utils.interp.adapters import adapt, sb3_actor_critic_forward  # noqa: E402


def timeit(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


@torch.no_grad()
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--reps", type=int, default=200)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    policy = blank_model(0).policy
    agent = adapt(policy)
    obs = torch.randint(0, 10, (a.batch, 147)).to(torch.uint8)

    def plain_hooks():
        out = {}
        handles = [m.register_forward_hook(lambda mod, i, o, n=n: out.__setitem__(n, o))
                   for n, m in policy.named_modules() if n]
        sb3_actor_critic_forward(policy, obs)
        for h in handles:
            h.remove()
        return out

    rows = {"SB3 forward (no hooks)": timeit(lambda: sb3_actor_critic_forward(policy, obs), a.reps),
            "adapted forward": timeit(lambda: agent(obs), a.reps),
            "adapted run_with_cache (all hooks)": timeit(lambda: agent.run_with_cache(obs), a.reps),
            "plain torch forward hooks (all modules)": timeit(plain_hooks, a.reps)}
    base = rows["SB3 forward (no hooks)"]
    print(f"batch {a.batch}, {a.reps} repetitions, 1 thread")
    for name, t in rows.items():
        print(f"{name:<42}{t * 1e3:8.3f} ms   x{t / base:5.2f} of SB3's forward")
    ratio = rows["adapted run_with_cache (all hooks)"] / rows["plain torch forward hooks (all modules)"]
    print(f"run_with_cache / plain torch hooks: x{ratio:.2f}")

    import warnings

    from sb3_contrib import RecurrentPPO

    from utils.adventure.doorkey import make_doorkey
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = RecurrentPPO("MlpLstmPolicy", make_doorkey(), n_steps=32, batch_size=32, seed=0, device="cpu",
                           policy_kwargs=dict(lstm_hidden_size=64)).policy
    rec_agent = adapt(rec)
    state = rec_agent.initial_state(a.batch)
    starts = torch.zeros(a.batch)
    packed = rec_agent.pack(obs, state, starts)
    rec_rows = {"sb3-contrib step (forward)": timeit(
                    lambda: rec.forward(obs, state, starts, deterministic=True), a.reps),
                "adapted step": timeit(lambda: rec_agent.step(obs, state, starts), a.reps),
                "adapted run_with_cache (all hooks)": timeit(lambda: rec_agent.run_with_cache(packed), a.reps)}
    base = rec_rows["sb3-contrib step (forward)"]
    print(f"recurrent (LSTM 64 units), batch {a.batch}")
    for name, t in rec_rows.items():
        print(f"{name:<42}{t * 1e3:8.3f} ms   x{t / base:5.2f} of sb3-contrib's step")


if __name__ == "__main__":
    main()
