"""`embedstore serve`: a store, opened read-only, as a JSON service (FastAPI on uvicorn) with a
browser page shipped in `static/` (no network needed).

A service over the API's `Store` (given to `create_app`, never imported here): every answer is a
`Store` method's, so the API, the CLI and the server agree; no SQL here.

May import: errors (and fastapi, starlette, uvicorn).
"""

from embedstore.serve.app import create_app, run

__all__ = ["create_app", "run"]
