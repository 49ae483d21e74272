"""Algorithm Distillation (chapter 02): environments, source algorithms, the hooked AD
transformer, training, in-context evaluation and interpretability helpers.

- `utils.ad.envs`: vectorised Dark Room (9x9, 5 actions, goal unseen) and Bernoulli bandits;
- `utils.ad.sources`: learning histories (tabular Q-learning, Thompson sampling / UCB1) and
  controls (expert, noise-annealed expert = AD-epsilon, shuffled episodes);
- `utils.ad.data`: (observation, previous action, previous reward) tokens and windows;
- `utils.ad.model`: `ADTransformer`, a TransformerLens `HookedTransformer` with custom embeddings;
- `utils.ad.train`: the AD loss and training loop;
- `utils.ad.evaluate`: in-context rollouts (moved goals, constructed prefixes, steering hooks);
- `utils.ad.interp`: attention scores, probe datasets, head patching, sloppy contexts;
- `utils.ad.pretrain`: the chapter's four Dark Room models and their shipped checkpoints
  (regenerate with `python -m utils.ad.pretrain`).
"""
