"""Rebuild the chapter's shipped agents: `python -m utils.vision_agents.pretrain <artifact> [...]`
(e.g. `ch11_breakout_ppo_s1`) or `all` (every agent and seed; about an hour of CPU)."""
from __future__ import annotations

import sys

import torch

from utils.core import CourseError
from utils.vision_agents.agents import AGENTS, SEEDS, ship_agent


def parse(artifact: str) -> tuple[str, int]:
    if not artifact.startswith("ch11_") or "_s" not in artifact:
        raise CourseError(f"artifact names look like ch11_<agent>_s<seed> (agents: {', '.join(AGENTS)}), got {artifact!r}")
    name, seed = artifact[len("ch11_"):].rsplit("_s", 1)
    if name not in AGENTS or not seed.isdigit() or int(seed) not in SEEDS:
        raise CourseError(f"unknown artifact {artifact!r}: agents {', '.join(AGENTS)}, seeds {SEEDS}")
    return name, int(seed)


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    if not argv:
        raise SystemExit(__doc__)
    targets = [f"ch11_{a}_s{s}" for a in AGENTS for s in SEEDS] if argv == ["all"] else argv
    for art in targets:
        name, seed = parse(art)
        entry = ship_agent(name, seed)
        print(art, entry["metrics"], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
