"""Interpretability tools for any hookable model (TransformerLens `HookedRootModule`).

- `hooks`: `check_names`, `cache_activations`;
- `patching`: `replace_hook`, `run_patched`, `fraction_recovered`, `patching_sweep` (the one
  patching loop), `split_pairs` and `heldout_unit_patching` (discovery/test split);
- `attribution`: `logit_diff` (the one logit-difference function), `direct_logit_attribution`;
- `probes`: linear probes beside majority, shuffled-label and random-model baselines;
- `attention`: attention mass on chosen keys and its uniform-head chance level;
- `steering`: `add_hook`, `mean_difference`, `norm_matched_random` (an isotropic floor, not a
  specific control);
- `controls`: specificity controls for direction / subspace claims (`specificity_controls`,
  `variance_matched_random`, `top_pcs`, `shuffled_labels`, `specificity_verdict`);
- `adapters`: `adapt` wraps any policy network (nn.Module, Stable-Baselines3, CleanRL) as a hookable model.
"""
from utils.interp.adapters import AdaptedPolicy, adapt
from utils.interp.attribution import direct_logit_attribution, logit_diff
from utils.interp.hooks import cache_activations, check_names
from utils.interp.patching import fraction_recovered, patching_sweep, replace_hook, run_patched
from utils.interp.probes import probe_with_baselines, train_probe
from utils.interp.steering import add_hook, mean_difference, norm_matched_random

__all__ = ["AdaptedPolicy", "adapt",
           "add_hook", "cache_activations", "check_names", "direct_logit_attribution", "fraction_recovered", "logit_diff",
           "mean_difference", "norm_matched_random", "patching_sweep", "probe_with_baselines", "replace_hook", "run_patched",
           "train_probe"]
