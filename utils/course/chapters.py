"""The chapter registry: the one list of chapters that the runner, the checks, the
README's chapter map and the curriculum page agree with (tests enforce it)."""
from __future__ import annotations

from dataclasses import dataclass

from utils.core import CourseError


@dataclass(frozen=True)
class Chapter:
    id: str            # file stem: solutions/<id>.ipynb, notebooks/<id>.ipynb, book/chapters/<id>.md
    title: str
    problems: str      # Nanda's problem numbers, or the source work
    difficulty: str    # Nanda's A-D scale (A easiest)
    hours: str         # a learner's time for the exercise notebook
    status: str        # "ready" (notebook, tests, page) or "planned"


CHAPTERS: tuple[Chapter, ...] = (
    Chapter("00_orientation", "Orientation: the toolkit on a tiny agent", "-", "A", "2-3", "ready"),
    Chapter("01_policy_gradient_q_learning", "Interpreting small policy-gradient and Q-learning agents", "8.15-8.18", "B", "4-5", "ready"),
    Chapter("02_algorithm_distillation", "Algorithm Distillation: RL in context or imitation?", "8.9", "B-C", "7", "ready"),
    Chapter("03_rlhf_brain_scan", "The RLHF brain scan: DPO, GRPO and RLOO in weights and SAE features", "8.13, seed 000", "B", "5-6", "ready"),
    Chapter("04_steering_with_rl", "Steering a language model with RL over SAE features: Control RL and AutoSteer", "seeds 002, 004", "C", "6", "ready"),
    Chapter("05_alphazero_concepts", "Concepts in an AlphaZero-style agent", "8.1-8.4", "B-C", "6-8", "ready"),
    Chapter("06_goal_misgeneralisation", "Goal misgeneralisation in gridworlds", "8.5-8.7", "B", "6-8", "ready"),
    Chapter("07_decision_transformers", "Decision transformers", "8.8", "B", "5", "ready"),
    Chapter("08_model_free_planning", "Planning in a model-free recurrent agent", "8.14", "C-D", "8-12", "ready"),
    Chapter("09_behavioural_cloning_and_dynamics", "Behavioural cloning and training dynamics", "8.19-8.20", "B-C", "6-7", "ready"),
    Chapter("10_rlhf_reward_model", "The RLHF pipeline in miniature, and its reward model opened", "8.10-8.12", "B-C", "6-8", "ready"),
    Chapter("11_agents_that_see", "Agents that see: MinAtar games and a gym task", "8.16-8.17", "B", "6", "ready"),
    Chapter("12_choose_your_own_adventure", "Choose your own adventure: bring any agent into the toolkit", "8.21", "B-D", "3", "ready"),
)


def ready_chapters() -> list[Chapter]:
    return [c for c in CHAPTERS if c.status == "ready"]


def get_chapter(name: str) -> Chapter:
    """A chapter by id (or by its number prefix, e.g. '00') that has a solution notebook:
    ready chapters, and chapters in progress whose notebook exists."""
    from utils.course import REPO_ROOT

    ready = ready_chapters()
    for c in CHAPTERS:
        if name in (c.id, c.id.split("_")[0]):
            if c.status == "ready" or (REPO_ROOT / "solutions" / f"{c.id}.ipynb").exists():
                return c
            raise CourseError(f"chapter {c.id!r} is planned, not written yet: ready chapters are {', '.join(r.id for r in ready)}")
    raise CourseError(f"unknown chapter {name!r}: ready chapters are {', '.join(c.id for c in ready)}")
