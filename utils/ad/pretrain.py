"""The chapter's four Dark Room models, trained or loaded by name.

- `ad`:          Algorithm Distillation on tabular Q-learning learning histories;
- `ed`:          expert distillation: the same model on expert episodes only;
- `ad_eps`:      AD-epsilon: histories of an expert whose noise anneals from 1 to 0 (no RL);
- `ad_shuffled`: the Q-learning histories with the episode order shuffled inside each task.

Every variant ships for the training seeds in `SEEDS`; the seed is part of the spec
(`DarkRoomSpec.seed`) and of the artifact name: seed 0 is `ch02_<name>`, seed s > 0 is
`ch02_<name>_s<s>` (data/<artifact>.pt). `train_variant(name, spec)` builds the data and trains;
`load_variant(name, spec)` loads the shipped checkpoint of `spec.seed` after checking it was made
with the same spec. Each manifest entry names the command that rebuilds that one artifact and
nothing else, e.g. `python -m utils.ad.pretrain ch02_ad_s1`; `python -m utils.ad.pretrain all`
rebuilds every one (about an hour of CPU).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from utils.ad.data import history_tokens
from utils.ad.evaluate import in_context_rollout
from utils.ad.sources import History, QLearningConfig, annealed_expert_histories, q_learning_histories, shuffle_episodes
from utils.ad.train import TrainConfig, train_ad
from utils.checkpoints import CheckpointError, load_checkpoint, read_manifest, save_checkpoint
from utils.core import CourseError
from utils.envs.dark_room import split_goals
from utils.models.ad_transformer import ADConfig, ADTransformer

VARIANTS = ("ad", "ed", "ad_eps", "ad_shuffled")
SEEDS = (0, 1, 2)                  # the training seeds every variant ships with
REGENERATE = "python -m utils.ad.pretrain"


@dataclass
class DarkRoomSpec:
    """Everything that defines a trained Dark Room model: task split, data, model, training."""
    size: int = 9
    episode_len: int = 20
    n_test_goals: int = 16
    split_seed: int = 0
    runs_per_goal: int = 16            # independent Q-learning runs (learning histories) per training goal
    history_episodes: int = 40         # episodes per learning history
    context_episodes: int = 4
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    q: QLearningConfig = field(default_factory=QLearningConfig)  # its n_episodes is ignored: history_episodes sets the length

    def validate(self) -> None:
        if self.context_episodes > self.history_episodes:
            raise CourseError(f"context_episodes ({self.context_episodes}) cannot exceed history_episodes ({self.history_episodes})")
        if self.runs_per_goal < 1 or self.steps < 1:
            raise CourseError(f"runs_per_goal and steps must be positive, got {self.runs_per_goal}, {self.steps}")

    def model_config(self) -> ADConfig:
        return ADConfig(n_obs=self.size ** 2, n_actions=5, context_len=self.context_episodes * self.episode_len,
                        n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, d_mlp=4 * self.d_model,
                        grid_size=self.size, seed=self.seed)

    def train_config(self, steps: int | None = None) -> TrainConfig:
        return TrainConfig(steps=steps or self.steps, batch_size=self.batch_size, lr=self.lr,
                           context_episodes=self.context_episodes, episode_len=self.episode_len, seed=self.seed)

    def goals(self):
        return split_goals(self.size, self.n_test_goals, self.split_seed)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["q"] = asdict(self.q)
        return d


def variant_history(name: str, spec: DarkRoomSpec) -> History:
    """The training data of a variant (built from the training goals only)."""
    if name not in VARIANTS:
        raise CourseError(f"unknown variant {name!r}: use one of {', '.join(VARIANTS)}")
    spec.validate()
    train_goals, _ = spec.goals()
    goals = train_goals.repeat(spec.runs_per_goal)
    q = QLearningConfig(**{**asdict(spec.q), "n_episodes": spec.history_episodes})
    if name in ("ad", "ad_shuffled"):
        h = q_learning_histories(goals, q, spec.size, spec.episode_len, seed=spec.seed + 1)
        return shuffle_episodes(h, seed=spec.seed + 2) if name == "ad_shuffled" else h
    if name == "ed":
        return annealed_expert_histories(goals, spec.history_episodes, 0.0, 0.0, spec.size, spec.episode_len, seed=spec.seed + 3)
    return annealed_expert_histories(goals, spec.history_episodes, 1.0, 0.0, spec.size, spec.episode_len, seed=spec.seed + 4)


def train_variant(name: str, spec: DarkRoomSpec, steps: int | None = None, progress: bool = True) -> tuple[ADTransformer, dict]:
    """Build the variant's data, train a fresh model on it; returns (model, training log)."""
    hist = variant_history(name, spec)
    tokens, targets = history_tokens(hist, 5)
    torch.manual_seed(spec.seed)
    model = ADTransformer(spec.model_config())
    t0 = time.perf_counter()
    log = train_ad(model, tokens, targets, spec.train_config(steps), desc=f"training {name}", progress=progress)
    log["train_seconds"] = time.perf_counter() - t0
    return model, log


def checkpoint_name(name: str, seed: int = 0) -> str:
    """The artifact name of variant `name` trained with `seed` (seed 0 keeps the original name)."""
    if name not in VARIANTS:
        raise CourseError(f"unknown variant {name!r}: use one of {', '.join(VARIANTS)}")
    if seed < 0:
        raise CourseError(f"seed must be >= 0, got {seed}")
    return f"ch02_{name}" if seed == 0 else f"ch02_{name}_s{seed}"


def parse_artifact(artifact: str) -> tuple[str, int]:
    """(variant, seed) of an artifact name made by `checkpoint_name`; one-line error otherwise."""
    for name in sorted(VARIANTS, key=len, reverse=True):
        base = f"ch02_{name}"
        if artifact == base:
            return name, 0
        if artifact.startswith(base + "_s") and artifact[len(base) + 2:].isdigit():
            return name, int(artifact[len(base) + 2:])
    known = ", ".join(checkpoint_name(n, s) for n in VARIANTS for s in SEEDS)
    raise CourseError(f"unknown chapter-02 artifact {artifact!r}: use one of {known}, or `all`")


def regenerate_command(name: str, seed: int = 0) -> str:
    """The command that rebuilds exactly one artifact (and leaves the others alone)."""
    return f"{REGENERATE} {checkpoint_name(name, seed)}"


def shipped_seeds(name: str) -> list[int]:
    """The seeds in SEEDS whose checkpoint of variant `name` is listed in data/manifest.json
    (all of them once every artifact has been built)."""
    listed = read_manifest()["artifacts"]
    return [s for s in SEEDS if checkpoint_name(name, s) in listed]


def load_variant(name: str, spec: DarkRoomSpec) -> ADTransformer:
    """The shipped checkpoint of a variant for `spec.seed`; raises a one-line error if it was
    made with another spec."""
    artifact = checkpoint_name(name, spec.seed)
    state, entry = load_checkpoint(artifact)
    if entry["config"] != spec.as_dict():
        diff = sorted(k for k in spec.as_dict() if entry["config"].get(k) != spec.as_dict()[k])
        raise CheckpointError(f"shipped {artifact} was trained with a different spec (differs in {diff}): "
                              f"train it instead, or regenerate with `{regenerate_command(name, spec.seed)}`")
    model = ADTransformer(spec.model_config())
    model.load_state_dict(state)
    model.eval()
    return model


def build_artifact(artifact: str, spec: DarkRoomSpec | None = None) -> dict:
    """Train and save ONE artifact (e.g. "ch02_ad_s1"); returns its metrics. Only that file and
    its manifest entry are written."""
    name, seed = parse_artifact(artifact)
    spec = DarkRoomSpec(seed=seed) if spec is None else spec
    if spec.seed != seed:
        raise CourseError(f"{artifact} is seed {seed} but the spec has seed {spec.seed}")
    _, test_goals = spec.goals()
    model, log = train_variant(name, spec)
    ro = in_context_rollout(model, test_goals.repeat(4), 16, spec.context_episodes, spec.size, spec.episode_len, seed=0)
    norm = ro.normalised
    metrics = {"final_loss": round(log["loss"][-1], 4), "train_seconds": round(log["train_seconds"], 1),
               "heldout_first_episode": round(float(norm[:, 0].mean()), 3),
               "heldout_last_episode": round(float(norm[:, -1].mean()), 3)}
    save_checkpoint(model.state_dict(), artifact, spec.as_dict(), regenerate_command(name, seed), metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - the regeneration command
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit(f"usage: {REGENERATE} ARTIFACT [ARTIFACT ...] | all   "
                         f"(e.g. {REGENERATE} ch02_ad_s1); rebuilds only the artifacts named")
    artifacts = [checkpoint_name(n, s) for s in SEEDS for n in VARIANTS] if args == ["all"] else args
    for a in artifacts:
        parse_artifact(a)  # fail on a bad name before any training starts
    torch.set_num_threads(1)
    for a in artifacts:
        print(a, build_artifact(a), flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()
