"""Algorithm Distillation (chapter 02): source algorithms, training, in-context evaluation
and the AD-specific interpretability helpers. The environments (Dark Room, bandits) are in
`utils.envs`, the model (`ADTransformer`) in `utils.models`, tabular Q-learning in `utils.rl`,
attention scores in `utils.interp.attention`.

- `utils.ad.sources`: learning histories (tabular Q-learning, Thompson sampling / UCB1) and
  controls (expert, noise-annealed expert = AD-epsilon, shuffled episodes);
- `utils.ad.data`: (observation, previous action, previous reward) tokens and windows;
- `utils.ad.train`: the AD loss and training loop;
- `utils.ad.evaluate`: in-context rollouts (moved goals, constructed prefixes, steering hooks);
- `utils.ad.interp`: attention scores, probe datasets, head patching, sloppy contexts;
- `utils.ad.pretrain`: the chapter's four Dark Room models and their shipped checkpoints
  (regenerate with `python -m utils.ad.pretrain`).
"""
