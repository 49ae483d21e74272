"""The chapter's four Dark Room models, trained or loaded by name.

- `ad`:          Algorithm Distillation on tabular Q-learning learning histories;
- `ed`:          expert distillation: the same model on expert episodes only;
- `ad_eps`:      AD-epsilon: histories of an expert whose noise anneals from 1 to 0 (no RL);
- `ad_shuffled`: the Q-learning histories with the episode order shuffled inside each task.

`train_variant(name, spec)` builds the data and trains; `load_variant(name, spec)` loads the
shipped checkpoint (data/ch02_<name>.pt) after checking it was made with the same spec.
Regenerate the shipped checkpoints with `python -m utils.ad.pretrain`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from utils.ad.data import history_tokens
from utils.ad.evaluate import in_context_rollout
from utils.ad.sources import History, QLearningConfig, annealed_expert_histories, q_learning_histories, shuffle_episodes
from utils.ad.train import TrainConfig, train_ad
from utils.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from utils.core import CourseError
from utils.envs.dark_room import split_goals
from utils.models.ad_transformer import ADConfig, ADTransformer

VARIANTS = ("ad", "ed", "ad_eps", "ad_shuffled")
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


def checkpoint_name(name: str) -> str:
    return f"ch02_{name}"


def load_variant(name: str, spec: DarkRoomSpec) -> ADTransformer:
    """The shipped checkpoint of a variant; raises a one-line error if it was made with another spec."""
    if name not in VARIANTS:
        raise CourseError(f"unknown variant {name!r}: use one of {', '.join(VARIANTS)}")
    state, entry = load_checkpoint(checkpoint_name(name))
    if entry["config"] != spec.as_dict():
        diff = sorted(k for k in spec.as_dict() if entry["config"].get(k) != spec.as_dict()[k])
        raise CheckpointError(f"shipped {checkpoint_name(name)} was trained with a different spec (differs in {diff}): "
                              f"train it instead, or regenerate with `{REGENERATE}`")
    model = ADTransformer(spec.model_config())
    model.load_state_dict(state)
    model.eval()
    return model


def main() -> None:  # pragma: no cover - the regeneration command

    torch.set_num_threads(1)
    spec = DarkRoomSpec()
    _, test_goals = spec.goals()
    for name in VARIANTS:
        model, log = train_variant(name, spec)
        ro = in_context_rollout(model, test_goals.repeat(4), 16, spec.context_episodes, spec.size, spec.episode_len, seed=0)
        norm = ro.normalised
        metrics = {"final_loss": round(log["loss"][-1], 4), "train_seconds": round(log["train_seconds"], 1),
                   "heldout_first_episode": round(float(norm[:, 0].mean()), 3),
                   "heldout_last_episode": round(float(norm[:, -1].mean()), 3)}
        save_checkpoint(model.state_dict(), checkpoint_name(name), spec.as_dict(), REGENERATE, metrics)
        print(name, metrics, flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()
