"""Analyses over stored embeddings: zero-shot, probes, separability, comparisons, stability.

They read stored vectors only (never torch / open_clip) and store each run with its config.
NumPy cores (`zeroshot`: prompt averaging and the rules; `metrics`: every metric, evaluable
findings and the group bootstrap; `scoring`: operating points) are the one place that maths
lives, and other services use them; each module's store-facing function of the same name
(`zeroshot.zeroshot`, `probe.probe`, ...) takes the `Storage`, reuses or computes a run and
writes it. `embedstore.api.Store` wraps them.

May import: store, data, errors (never torch, models, or another service).
"""
