"""Analyses over stored embeddings: zero-shot, probes, separability, projections.

They read stored vectors only (never torch / open_clip) and store each run with its config.
Pure cores work on numpy arrays; each module's store-facing function of the same name
(`zeroshot.zeroshot`, `probe.probe`, `separability.separability`, `runs.runs`) reads a
store, reuses or computes a run and writes it. `embedstore.api.Store` wraps them.
"""
