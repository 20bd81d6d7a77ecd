"""`embedstore preview`: the pixels the model sees, as a PNG."""
from embedstore.cli import app  # noqa: F401
