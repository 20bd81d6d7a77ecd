"""Grad-CAM heatmaps and their agreement with annotated boxes.

- `layers.py`: the default target layer per architecture and the token -> grid reshape.
- `targets.py`: the scalar Grad-CAM differentiates (zero-shot pos-neg logit, probe logit, head logit).
- `heatmaps.py`: batched pytorch-grad-cam; heatmaps in the model frame and the original frame.
- `agreement.py`: pointing game, energy, IoU / Dice / pixel P-R-F1, pixel AUROC / AUPRC and a
  val-fitted Dice against boxes, baselines, patient-bootstrap summaries.
- `overlay.py`: the heatmap drawn on the original image with its boxes.
- `cache.py`: model-frame heatmaps cached on disk (float16 .npz).
- `service.py`: `explain` and `agreement` on a store (what the API calls); overlays for the report.

Only `heatmaps.py` / `layers.py` / `targets.py` need torch, and only inside functions.

May import: store, models, data, analyses' NumPy cores, files, progress, errors.
"""
