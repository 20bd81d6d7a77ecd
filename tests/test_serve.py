"""`embedstore serve`: every endpoint and error of a real server (a subprocess on 127.0.0.1),
the same answers as the API and the CLI, token auth, and the obvious attacks leave the store as it was.

The store is a copy of the session's small phantom store (16 studies, v1 by phantom-clip).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import httpx
import pytest
from serve_process import command, env, started

import embedstore


def _digest(path) -> str:
    return hashlib.sha256((path / "embedstore.duckdb").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def served(small_phantoms, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    store = root / "store"
    shutil.copytree(small_phantoms / "store", store)
    # one stored run, for /runs and /runs/{id}/metrics
    embedstore.open(store).zeroshot("v1", rule="pos-neg", n_boot=10, min_positives=1)
    before = _digest(store)
    with started(store, log=root / "server.log") as base:
        with httpx.Client(base_url=base, timeout=120) as client:
            yield client, store, before, small_phantoms


def test_health_versions_and_the_openapi_schema(served):
    client, store, _, _ = served
    assert client.get("/health").json() == {"status": "ok", "store": str(store.resolve()), "versions": 1,
                                            "models_loaded": 0}
    versions = client.get("/versions").json()
    assert [v["version"] for v in versions] == ["v1"] and versions[0]["model_name"] == "phantom-clip"
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/health", "/versions", "/query", "/images/{image_id}", "/images/{image_id}/thumbnail",
                 "/explain/{image_id}", "/runs", "/runs/{run_id}/metrics", "/compare"):
        assert path in paths, path


def test_a_query_gives_what_the_api_and_the_cli_give(served):
    client, store, _, _ = served
    got = client.get("/query", params={"text": "cardiomegaly", "k": 5}).json()
    api = embedstore.open(store).query("cardiomegaly", k=5)
    cli = subprocess.run([*command(store)[:3], "query", "cardiomegaly", "-k", "5", "--store", str(store),
                          "--format", "json"], env=env(), capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert len(got) == 5 and "path" not in got[0]
    for other in (api.to_dicts(), json.loads(cli.stdout)):
        assert [r["image_id"] for r in got] == [r["image_id"] for r in other]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in other], abs=1e-6)
        assert [r["labels"] for r in got] == [r["labels"] for r in other]


def test_structured_filters_and_like(served):
    client, store, _, _ = served
    api = embedstore.open(store)
    test = client.get("/query", params={"text": "cardiomegaly", "k": 50, "split": "test"}).json()
    assert test and {api.image(r["image_id"])["split"] for r in test} == {"test"}
    finding = next(r["labels"].split(", ")[0] for r in api.query("cardiomegaly", k=16).to_dicts() if r["labels"])
    present = client.get("/query", params={"text": "cardiomegaly", "k": 50, "present": finding}).json()
    assert present and all(finding in r["labels"].split(", ") for r in present)
    absent = client.get("/query", params={"text": "cardiomegaly", "k": 50, "absent": finding}).json()
    assert absent and all(finding not in r["labels"].split(", ") for r in absent)
    everything = client.get("/query", params={"text": "cardiomegaly", "k": 200}).json()
    assert len(present) + len(absent) == len(everything) > 16
    first = present[0]["image_id"]
    like = client.get("/query", params={"like": first, "k": 3}).json()
    assert len(like) == 3 and first not in [r["image_id"] for r in like]
    assert [r["image_id"] for r in like] == api.query(like=first, k=3)["image_id"].to_list()


def test_an_image_its_thumbnail_and_its_overlay(served):
    client, store, _, _ = served
    api = embedstore.open(store)
    boxed = next(b["image_id"] for b in api._storage.boxes().to_dicts())
    got = client.get(f"/images/{boxed}").json()
    assert got["image_id"] == boxed and "path" not in got
    assert got["boxes"] and got["labels"] == api.image(boxed)["labels"]
    thumb = client.get(f"/images/{boxed}/thumbnail", params={"size": 32})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    from io import BytesIO

    from PIL import Image

    assert max(Image.open(BytesIO(thumb.content)).size) == 32
    finding = got["boxes"][0]["finding"]
    overlay = client.get(f"/explain/{boxed}", params={"finding": finding})
    assert overlay.status_code == 200, overlay.text
    assert overlay.content[:8] == b"\x89PNG\r\n\x1a\n"
    again = client.get(f"/explain/{boxed}", params={"finding": finding})
    assert again.content == overlay.content


def test_runs_their_metrics_and_compare(served):
    client, _, _, _ = served
    runs = client.get("/runs").json()
    assert len(runs) == 1 and runs[0]["kind"] == "zeroshot"
    metrics = client.get(f"/runs/{runs[0]['run_id']}/metrics").json()
    assert metrics and {"finding", "metric", "value"} <= set(metrics[0])
    assert client.get("/runs/no-such-run/metrics").status_code == 404
    # one version only: compare names the missing one
    bad = client.get("/compare", params={"v1": "v1", "v2": "v9"})
    assert bad.status_code == 400 and "v2='v9'" in bad.json()["error"]


def test_an_uploaded_image_is_a_query(served):
    client, store, _, phantoms = served
    api = embedstore.open(store)
    row = api.query("cardiomegaly", k=1).row(0, named=True)
    from pathlib import Path

    got = client.post("/query", params={"k": 3}, content=Path(row["path"]).read_bytes())
    assert got.status_code == 200, got.text
    assert [r["image_id"] for r in got.json()] == api.query(image=row["path"], k=3)["image_id"].to_list()
    assert got.json()[0]["image_id"] == row["image_id"]  # the image itself is its nearest


@pytest.mark.parametrize("path, params, status, named", [
    ("/query", {"text": "cardiomegaly", "k": 0}, 400, "k"),
    ("/query", {"text": "cardiomegaly", "k": 100000}, 400, "k"),
    ("/query", {"text": "cardiomegaly", "k": "ten"}, 400, "k"),
    ("/query", {}, 400, "text="),
    ("/query", {"text": "a", "like": "b"}, 400, "text="),
    ("/query", {"text": "cardiomegaly", "split": "test' OR 1=1 --"}, 400, "split="),
    ("/query", {"text": "cardiomegaly", "present": "Cardiomegaly\" = 1 OR 1=1 --"}, 400, "not in the store"),
    ("/query", {"like": "../../etc/passwd"}, 404, "no image"),
    ("/images/..%2F..%2Fetc%2Fpasswd", {}, 404, "Not Found"),  # %2F is a path separator: no route
    ("/images/no-such-image/thumbnail", {}, 404, "no image"),
    ("/explain/no-such-image", {"finding": "Cardiomegaly"}, 404, "no image"),
    ("/compare", {"v1": "v1"}, 400, "v2"),
    ("/no-such-endpoint", {}, 404, "Not Found"),
])
def test_malformed_requests_get_a_json_error_naming_the_parameter(served, path, params, status, named):
    client, _, _, _ = served
    got = client.get(path, params=params)
    assert got.status_code == status, got.text
    assert named in got.json()["error"] and "Traceback" not in got.text


def test_sql_in_a_view_is_a_constant(served):
    client, _, _, _ = served
    got = client.get("/query", params={"text": "cardiomegaly", "view": "frontal' OR 1=1 --"})
    assert got.status_code == 200 and got.json() == []


def test_uploads_oversized_empty_or_not_an_image(served):
    client, _, _, _ = served
    big = client.post("/query", content=b"\0" * (8 * 1024 * 1024 + 1))
    assert big.status_code == 413 and "MiB" in big.json()["error"]
    assert client.post("/query", content=b"").status_code == 400
    junk = client.post("/query", content=b"this is not an image")
    assert junk.status_code == 400 and "Traceback" not in junk.text


def test_the_page_and_its_favicon_are_served(served):
    client, _, _, _ = served
    page = client.get("/")
    assert page.status_code == 200 and 'id="search"' in page.text
    assert "//" not in page.text.split("<body")[0]  # nothing loaded from another host
    assert client.get("/favicon.ico").status_code == 200
    assert client.get("/static/app.js").status_code == 200


def test_the_store_was_not_changed(served):
    # last in the module: every request above (attacks included) left the database file as it was
    client, store, before, _ = served
    assert client.get("/health").status_code == 200
    assert _digest(store) == before


def test_a_token_is_checked_on_every_request(small_phantoms, tmp_path):
    with started(small_phantoms / "store", "--token", "s3cret", log=tmp_path / "server.log",
                 headers={"Authorization": "Bearer s3cret"}) as base:
        assert httpx.get(f"{base}/health", timeout=30).status_code == 401
        wrong = httpx.get(f"{base}/versions", headers={"Authorization": "Bearer nope"}, timeout=30)
        assert wrong.status_code == 401 and "token" in wrong.json()["error"]
        assert httpx.get(f"{base}/versions", headers={"Authorization": "Bearer s3cret"}, timeout=30).status_code == 200
        # the page opened as /?token=: its own script and style load (a cookie), with no token they do not
        assert httpx.get(f"{base}/static/app.js", timeout=30).status_code == 401
        with httpx.Client(base_url=base, timeout=30) as browser:
            assert browser.get("/", params={"token": "s3cret"}).status_code == 200
            assert browser.get("/static/app.js").status_code == 200 and browser.get("/static/style.css").status_code == 200
            browser.cookies.set("embedstore_token", "nope")
            assert browser.get("/versions").status_code == 401


def test_a_non_loopback_host_needs_a_token(small_phantoms):
    done = subprocess.run(command(small_phantoms / "store", "--host", "0.0.0.0", "--port", "8765"), env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --host 0.0.0.0 is not loopback: give --token")


def test_the_map_is_the_api_projection_bounded_with_json_errors(small_phantoms, tmp_path):
    # in-process (the app over a read-only API Store): /map before and after a separability run
    from fastapi.testclient import TestClient

    from embedstore.api import Store
    from embedstore.serve.app import create_app

    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    client = TestClient(create_app(Store(store, read_only=True)))
    assert client.get("/map").json() == []  # no separability run: nothing stored, nothing computed
    writer = embedstore.open(store)
    first = writer.separability("v1").to_polars()["run_id"][0]
    latest = writer.separability("v1", force=True).to_polars()["run_id"][0]
    assert latest != first
    api = Store(store, read_only=True)
    for method in ("pca", "tsne"):
        got = client.get("/map", params={"version": "v1", "method": method}).json()
        assert got == api.projection("v1", method=method).to_dicts()
        assert {r["run_id"] for r in got} == {latest}  # the latest run's, not both
        assert {r["split"] for r in got} == {"test"} and len({r["image_id"] for r in got}) == len(got) >= 3
    pca = client.get("/map").json()
    two = client.get("/map", params={"limit": 2}).json()
    assert len(two) == 2 and all(r in pca for r in two)
    assert "/map" in client.get("/openapi.json").json()["paths"]
    for params, named in (({"version": "v9"}, "version='v9'"), ({"method": "umap'; DROP TABLE images"}, "method"),
                          ({"method": "lda"}, "method='lda'"), ({"limit": 0}, "limit"), ({"limit": 5001}, "limit"),
                          ({"limit": "all"}, "limit")):
        bad = client.get("/map", params=params)
        assert bad.status_code == 400 and named in bad.json()["error"], bad.text
        assert "\n" not in bad.text and "Traceback" not in bad.text
