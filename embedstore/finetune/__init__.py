"""Training core shared by the bundled `phantom-clip` model and `embedstore finetune`.

- `objectives.py`: the CLIP (contrastive) loss, BCE with per-finding positive weights, and the
  two objectives (`ContrastiveObjective`, `BCEObjective`) the loop trains.
- `data.py`: images decoded once into a uint8 tensor, paired with texts and labels.
- `loop.py`: one optimizer and one warm-up + cosine schedule for the whole run, freezing,
  gradient accumulation, mixed precision on GPU only, early stopping on validation macro AUROC,
  a checkpoint every epoch and resume from the last one.

- `run.py`: `embedstore finetune`: prepare, train, export, register the new version, re-encode.

Everything here imports torch; nothing the CLI imports at start-up may import this package at
module top level.

May import: store, models, data, encode, analyses' NumPy cores, files, progress, errors.
"""
