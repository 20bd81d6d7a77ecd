"""Phantom chest radiographs with known findings and boxes, written in the Open-i layout.

May import: data, results, progress, errors.
"""

from embedstore.synth.generate import DEFAULT_SIZE, ImageRenderer, Study, SynthSummary, make_study, synth
from embedstore.synth.labels import FINDINGS, StudyLabels, labels_from_automatic, sample_labels

__all__ = ["DEFAULT_SIZE", "FINDINGS", "ImageRenderer", "Study", "StudyLabels", "SynthSummary",
           "labels_from_automatic", "make_study", "sample_labels", "synth"]
