"""`embedstore inspect`: what a data-set reader found, before anything is encoded."""
from embedstore.cli import app  # noqa: F401
