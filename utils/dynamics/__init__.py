"""Training dynamics and behavioural cloning (chapter 09, problems 8.19-8.20).

- `checkpoints`: `log_spaced_checkpoints`, `train_with_checkpoints` (train_ppo's callback saves
  the network over training), `load_checkpoint(s)` with one-line errors for another
  architecture or an empty list, `weight_stats`;
- `metrics`: what is measured at every checkpoint and between two networks (effective rank,
  unit ablation, held-out patching, steering, probes over checkpoints, CKA, unit matching,
  affine stitching, onset of a change, vestigial and inert units);
- `cloning`: policy distillation (`distillation_loss`, `distil` with optional DAgger),
  `action_agreement`, `collect_states`, `value_error`.

The separate-networks actor-critic is `utils.models.actor_critic.SeparateActorCritic`.
"""
from utils.dynamics.checkpoints import (Checkpoint, CheckpointRecorder, check_checkpoints, load_checkpoint,
                                        load_checkpoints, log_spaced_checkpoints, train_with_checkpoints,
                                        weight_stats)
from utils.dynamics.cloning import (action_agreement, collect_states, distil, distillation_loss,
                                    value_error)
from utils.dynamics.metrics import (dormant_fraction, effective_rank, fit_affine_map, heldout_topk_recovery, inert_units, linear_cka,
                                    match_units, onset, policy_entropy, probe_over_checkpoints, steering_effect,
                                    unit_ablation_effect, vestigial_units)

__all__ = ["Checkpoint", "CheckpointRecorder", "action_agreement", "check_checkpoints", "collect_states", "distil",
           "distillation_loss", "dormant_fraction", "effective_rank", "fit_affine_map", "heldout_topk_recovery", "inert_units",
           "linear_cka", "load_checkpoint", "load_checkpoints", "log_spaced_checkpoints", "match_units", "onset",
           "policy_entropy", "probe_over_checkpoints", "steering_effect", "train_with_checkpoints",
           "unit_ablation_effect", "value_error", "vestigial_units", "weight_stats"]
