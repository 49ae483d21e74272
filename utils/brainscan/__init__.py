"""The RLHF brain scan: what RLOO, GRPO and DPO each do to a model's weights and SAE features.

- `train`: the three TRL 1.16 trainers, matched in steps and learning rate, on a positive-
  and a negative-sentiment task (`TASKS`; a detoxification task too, unused: no headroom), and `completion_scores` for behaviour.
- `metrics`: effective rank (two labelled definitions), top-1 energy, direction alignment,
  rank-k truncation, recovery fraction, top-k Jaccard, firing-frequency shifts (intervals over seeds: `utils.stats`).
- `analysis`: weight deltas, rank-k and norm-matched rebuilt models, SAE sites and feature statistics.
"""
from utils.brainscan.metrics import (
                                     direction_alignment,
                                     disrupted_features,
                                     effective_rank_energy,
                                     effective_rank_roy_vetterli,
                                     firing_frequency,
                                     recovery_fraction,
                                     top1_energy,
                                     topk_jaccard,
                                     truncate_rank,
)

__all__ = ["direction_alignment", "disrupted_features", "effective_rank_energy", "effective_rank_roy_vetterli",
           "firing_frequency", "recovery_fraction", "top1_energy",
           "topk_jaccard", "truncate_rank"]
