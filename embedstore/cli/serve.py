"""`embedstore serve`: the store, read-only, as a JSON service with a browser page."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import STORE


@app.command()
def serve(
    store: Optional[str] = STORE,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; any but loopback needs --token."),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    token: Optional[str] = typer.Option(None, "--token", help="Bearer token every request must send."),
    model_warm: bool = typer.Option(False, "--model-warm",
                                    help="Load the latest version's model once: free-text and image queries need no reload."),
) -> None:
    """Serve the store (read-only) on HTTP: JSON endpoints, an OpenAPI schema at /docs, and a page at /."""
    from embedstore.api import Store

    Store(store, read_only=True).serve(host=host, port=port, token=token, model_warm=model_warm)
