"""Data sets, images, boxes and prompts: everything before the model.

Readers turn a data set as it is distributed into canonical `ImageRecord`s
(see `records.py`); `images.py` turns a file into the pixels a model sees.
"""
