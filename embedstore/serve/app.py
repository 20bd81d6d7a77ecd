"""The server's routes: JSON endpoints over a read-only API `Store`, errors as JSON, bearer token.

Errors: a malformed or unknown parameter is 400 (`{"error": "..."}` naming it), an unknown image
or run 404, a missing or wrong token 401, an oversized upload 413, a busy store 503; never a
traceback.
"""

from __future__ import annotations

import atexit
import hmac
import ipaddress
import math
import shutil
import tempfile
import threading
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedstore.errors import EmbedstoreError, InputError, StoreBusy

STATIC = Path(__file__).resolve().parent / "static"
MAX_K = 200  # results per query
MAX_MAP = 5000  # points of the embedding map per request
MAX_UPLOAD = 8 * 1024 * 1024  # bytes of an uploaded query image
TARGETS = ("zeroshot", "probe", "finetuned")


class ApiError(Exception):
    """An answer other than 200, with its status and one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(value):
    """A polars frame (or a typed result with `.to_polars()`) as JSON rows, NaN as null."""
    if hasattr(value, "to_polars"):
        value = value.to_polars()
    rows = value.to_dicts() if hasattr(value, "to_dicts") else value
    return [{k: _clean(v) for k, v in r.items()} for r in rows]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def _names(value: str | None, param: str) -> list[str] | None:
    """A comma-separated list of finding names (None when not given)."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ApiError(400, f"{param}={value!r}: give finding names separated by commas")
    return names


TOKEN_COOKIE = "embedstore_token"  # set when the page is opened with ?token=, so its <script> and <link> load


def create_app(store, token: str | None = None) -> FastAPI:
    """The app over `store` (an `embedstore.api.Store`, opened read-only)."""
    app = FastAPI(title="embedstore", version="1", summary="A chest-radiograph embedding store, read-only.")
    overlays = Path(tempfile.mkdtemp(prefix="embedstore-serve-overlays-"))
    atexit.register(shutil.rmtree, overlays, True)
    overlay_lock = threading.Lock()  # one Grad-CAM at a time: the model and the heatmap cache are shared

    async def check_token(request: Request, call_next):
        header = request.headers.get("authorization", "")
        given = (header[7:] if header.lower().startswith("bearer ") else
                 request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE, ""))
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "missing or wrong token: send the header "
                                          "`Authorization: Bearer TOKEN` (the serve --token)"}, status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):  # the page opened as /?token=...: its own assets carry it as a cookie
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    if token is not None:  # an HTTP middleware costs every request a task and streams: only when it checks
        app.middleware("http")(check_token)

    @app.exception_handler(ApiError)
    async def api_error(_request, err: ApiError):
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(EmbedstoreError)
    async def store_error(_request, err: EmbedstoreError):
        status = 503 if isinstance(err, StoreBusy) else 400 if isinstance(err, InputError) else 500
        return JSONResponse({"error": " ".join(str(err).split())}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_request, err: RequestValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')} (got {first.get('input')!r})"},
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_request, err: Exception):
        first = (str(err).strip().splitlines() or [""])[0]
        return JSONResponse({"error": f"{type(err).__name__}: {first}"}, status_code=500)

    # ---- JSON ------------------------------------------------------------------------------
    @app.get("/health")
    def health():
        from embedstore.models.registry import loads

        return {"status": "ok", "store": str(store.path), "versions": len(store.versions()), "models_loaded": loads()}

    @app.get("/versions")
    def versions():
        return _json(store.versions())

    @app.get("/findings")
    def findings():
        return _json(store.splits(min_positives=1).to_polars())

    def _query(text, like, image, k, split, view, present, absent, version):
        hits = store.query(text, image=image, like=like, k=k, version=version, split=split, view=view,
                           present=_names(present, "present"), absent=_names(absent, "absent"))
        return JSONResponse(_json(hits.drop("path")))  # rows already JSON-clean: no jsonable_encoder pass

    @app.get("/query")
    def query(text: str | None = Query(None, min_length=1, max_length=500),
              like: str | None = Query(None, min_length=1, max_length=300),
              k: int = Query(10, ge=1, le=MAX_K), split: str | None = None,
              view: str | None = Query(None, max_length=40), present: str | None = None,
              absent: str | None = None, version: str | None = Query(None, max_length=40)):
        """Top-k stored images for a text (a finding name, a stored prompt, or free text) or a
        stored image (`like`), filtered by split, view and findings present or absent."""
        if (text is None) == (like is None):
            raise ApiError(400, "give exactly one of text=... or like=IMAGE_ID (or POST an image to /query)")
        if like is not None:
            _image(like)
        return _query(text, like, None, k, split, view, present, absent, version)

    @app.post("/query")
    async def query_image(request: Request, k: int = Query(10, ge=1, le=MAX_K), split: str | None = None,
                          view: str | None = Query(None, max_length=40), present: str | None = None,
                          absent: str | None = None, version: str | None = Query(None, max_length=40)):
        """Top-k stored images for an uploaded image (the request body: PNG, JPEG or DICOM bytes)."""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_UPLOAD:
                raise ApiError(413, f"upload larger than {MAX_UPLOAD // (1024 * 1024)} MiB; send a smaller image")
        if not body:
            raise ApiError(400, "empty upload: send the image's bytes as the request body")
        with tempfile.NamedTemporaryFile(prefix="embedstore-upload-", suffix=".img") as f:
            f.write(body)
            f.flush()
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(_query, None, None, f.name, k, split, view, present, absent, version)

    def _image(image_id: str) -> dict:
        try:
            return store.image(image_id)
        except InputError as err:
            raise ApiError(404, str(err)) from None

    def _version(version: str | None) -> str | None:
        if version is not None and version not in store.versions()["version"].to_list():
            raise ApiError(400, f"version={version!r}: no such version; see /versions")
        return version

    @app.get("/map")
    def embedding_map(version: str | None = Query(None, max_length=40), method: str = Query("pca", max_length=10),
                      limit: int = Query(2000, ge=1, le=MAX_MAP)):
        """The version's stored 2-D projection of its test images (image_id, x, y, labels, split,
        view, run_id; a seeded sample of `limit` when there are more); [] when no separability ran."""
        return _json(store.projection(_version(version), method=method, limit=limit))

    @app.get("/images/{image_id}")
    def image(image_id: str):
        """One image: metadata, labels, boxes and the report text."""
        found = _image(image_id)
        found.pop("path", None)  # ids, never file paths, cross the server
        return _clean(found)

    @app.get("/images/{image_id}/thumbnail", response_class=Response)
    def thumbnail(image_id: str, size: int = Query(256, ge=16, le=1024)):
        _image(image_id)
        return Response(store.thumbnail(image_id, size), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/explain/{image_id}", response_class=Response)
    def explain(image_id: str, finding: str = Query(..., min_length=1, max_length=100),
                target: str = "zeroshot", version: str | None = Query(None, max_length=40)):
        """The Grad-CAM overlay PNG of one image for one finding (cached per image, finding,
        target and version)."""
        _image(image_id)
        if target not in TARGETS:
            raise ApiError(400, f"target={target!r}: give one of {', '.join(TARGETS)}")
        known = store.splits(min_positives=1).to_polars()["finding"].to_list()
        if finding not in known:
            raise ApiError(400, f"finding={finding!r}: not in the store; give one of {', '.join(known)}")
        version = _version(version) or store.versions()["version"].to_list()[-1]
        key = f"{len(image_id)}-{abs(hash((image_id, finding, target, version)))}.png"
        out = overlays / key
        with overlay_lock:
            if not out.exists():
                store.explain(image_id, finding, target=target, version=version, out=str(out))
        return FileResponse(out, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/runs")
    def runs(kind: str | None = Query(None, max_length=40)):
        return _json(store.runs(kind))

    @app.get("/runs/{run_id}/metrics")
    def run_metrics(run_id: str):
        try:
            return _json(store.run_metrics(run_id))
        except InputError as err:
            raise ApiError(404, str(err)) from None

    @app.get("/compare")
    def compare(v1: str = Query(..., max_length=40), v2: str = Query(..., max_length=40),
                n_boot: int = Query(200, ge=0, le=2000)):
        """Paired differences of the runs stored on both versions (nothing is run: the store is read-only)."""
        known = store.versions()["version"].to_list()
        for name, v in (("v1", v1), ("v2", v2)):
            if v not in known:
                raise ApiError(400, f"{name}={v!r}: no such version; give one of {', '.join(known)}")
        return _json(store.compare(v1, v2, n_boot=n_boot, no_run=True))

    # ---- the page ----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/vega.js", include_in_schema=False)
    def vega_bundle():
        """Vega, Vega-Lite and vega-embed: the report's inlined bundle, from the installed vl-convert."""
        from embedstore.reports.html import javascript_bundle

        return Response(javascript_bundle(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def run(store, host: str = "127.0.0.1", port: int = 8765, token: str | None = None, model_warm: bool = False) -> None:
    """Serve `store` with uvicorn until stopped; any host but loopback needs a token."""
    if not is_loopback(host) and not token:
        raise InputError(f"--host {host} is not loopback: give --token TOKEN (checked on every request), "
                         "or bind 127.0.0.1")
    if not 0 < port < 65536:
        raise InputError(f"--port {port}: give a port from 1 to 65535")
    import uvicorn

    if model_warm:
        store.warm()
    uvicorn.run(create_app(store, token=token), host=host, port=port, log_level="warning", access_log=False)
