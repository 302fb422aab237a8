"""Experiments: what bench/quality.md measured, kept apart from the product trainer, which never
runs them (setfit keeps its distillation trainer beside, not inside, its trainer).

- `ablation.py`: every component and combination of the transformer's mixture, each calibrated
  on the same validation rows (the rows of bench/quality.md), from a training run or a trained
  directory;
- `priors.py`: prior correction (logit adjustment) of the mixture, fixed or searched;
- `distillation.py`: a student fine-tuned on a teacher directory's softened probabilities too
  (the trainer's `extra_loss` hook);
- `scratch.py`: a tokenizer and a small encoder pretrained from scratch (`aduan base pretrain`).

Run them with `python -m aduan.training.experiments --help`.
"""
