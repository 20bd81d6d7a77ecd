"""Data sets, images, boxes, prompts and splits: everything before the model.

Readers turn a data set as it is distributed into canonical `ImageRecord`s
(see `records.py`); `images.py` turns a file into the pixels a model sees; `splits.py` draws
and freezes the splits (the store calls it).

May import: errors, files (never the store, models or a service).
"""
