"""`embedstore serve --model-warm` loads the model once, and the API, the CLI and the server give
the same hits (ids and scores) for the same query: stored text, free text, `like` and the
structured filters (issue 18).

The servers are subprocesses on 127.0.0.1 stopped by their PID (serve_process.py); the store is
a copy of the session's small phantom store (the CLI and the API cache a new text's vector in it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from cli_process import run_in_fresh_process
from serve_process import started

import embedstore

FREE = ("an enlarged heart filling the chest", "fluid at the left lung base")


@pytest.fixture(scope="module")
def warm(small_phantoms, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-warm")
    store = root / "store"
    shutil.copytree(small_phantoms / "store", store)
    with started(store, "--model-warm", log=root / "server.log") as base:
        with httpx.Client(base_url=base, timeout=120) as client:
            yield client, store


def _loads(client) -> int:
    return client.get("/health").json()["models_loaded"]


def test_model_warm_loads_the_model_once_for_free_text_and_image_queries(warm):
    client, store = warm
    assert _loads(client) == 1  # loaded at start, before any query
    for text in FREE:
        got = client.get("/query", params={"text": text, "k": 3})
        assert got.status_code == 200, got.text
        assert len(got.json()) == 3
    path = embedstore.open(store).query("cardiomegaly", k=1)["path"][0]
    upload = client.post("/query", params={"k": 3}, content=Path(path).read_bytes())
    assert upload.status_code == 200, upload.text
    assert Path(path).stem == upload.json()[0]["image_id"]  # the image itself is its nearest
    assert _loads(client) == 1


def test_without_model_warm_stored_text_loads_nothing_and_each_free_text_loads_the_model(small_phantoms, tmp_path):
    # the store is read-only to the server, so a new text's vector is not cached: each one loads the model
    with started(small_phantoms / "store", log=tmp_path / "server.log") as base:
        with httpx.Client(base_url=base, timeout=120) as client:
            assert _loads(client) == 0
            assert client.get("/query", params={"text": "cardiomegaly", "k": 3}).status_code == 200
            assert _loads(client) == 0
            for n, text in enumerate(FREE, start=1):
                got = client.get("/query", params={"text": text, "k": 3})
                assert got.status_code == 200 and len(got.json()) == 3, got.text
                assert _loads(client) == n


def _filters(store) -> dict:
    """split, view, a present and an absent finding under which some image matches."""
    api = embedstore.open(store)
    hit = next(r for r in api.query("cardiomegaly", k=32).to_dicts() if r["labels"])
    image = api.image(hit["image_id"])
    labels = hit["labels"].split(", ")
    other = sorted(set(api.sql("SELECT DISTINCT finding FROM labels")["finding"]) - set(labels))[0]
    return {"split": image["split"], "view": image["view"], "present": [labels[0]], "absent": [other]}


def test_the_api_the_cli_and_the_server_give_the_same_hits(warm):
    client, store = warm
    like = embedstore.open(store).query("cardiomegaly", k=1)["image_id"][0]
    filters = _filters(store)
    cases = [  # (API keywords, CLI arguments, server parameters)
        ({"text": "cardiomegaly"}, ["cardiomegaly"], {"text": "cardiomegaly"}),
        ({"text": FREE[0]}, [FREE[0]], {"text": FREE[0]}),
        ({"like": like}, ["--like", like], {"like": like}),
        ({"text": "cardiomegaly", **filters},
         ["cardiomegaly", "--split", filters["split"], "--view", filters["view"], "--present", filters["present"][0],
          "--absent", filters["absent"][0]],
         {"text": "cardiomegaly", "split": filters["split"], "view": filters["view"],
          "present": filters["present"][0], "absent": filters["absent"][0]}),
    ]
    served = []
    for _, _, params in cases:  # the server first: the API and the CLI cache a new text's vector
        got = client.get("/query", params={**params, "k": 8})
        assert got.status_code == 200, got.text
        served.append(got.json())
    api = [embedstore.open(store).query(k=8, **kw).to_dicts() for kw, _, _ in cases]
    cli = run_in_fresh_process([["query", *args, "-k", "8", "--store", str(store), "--format", "json"]
                                for _, args, _ in cases])
    for n, (server_hits, api_hits, cli_run) in enumerate(zip(served, api, cli)):
        assert cli_run["code"] == 0, cli_run["err"]
        cli_hits = json.loads(cli_run["out"])
        assert server_hits, cases[n]
        for other in (api_hits, cli_hits):
            assert [r["image_id"] for r in server_hits] == [r["image_id"] for r in other], cases[n]
            assert [r["score"] for r in server_hits] == pytest.approx([r["score"] for r in other], abs=1e-6)
    # the filters did filter: every hit is in the split and view, has the present finding, lacks the absent one
    for r in served[3]:
        image = embedstore.open(store).image(r["image_id"])
        assert (image["split"], image["view"]) == (filters["split"], filters["view"])
        assert filters["present"][0] in r["labels"].split(", ") and filters["absent"][0] not in r["labels"].split(", ")


@pytest.mark.parametrize("args, message", [
    (["--split", "holdout"], "split='holdout': give one of train, val, test"),
    (["--present", "No Such Finding"], "finding 'No Such Finding' is not in the store"),
])
def test_a_bad_cli_filter_is_a_one_line_error(small_phantoms, args, message):
    [run] = run_in_fresh_process([["query", "cardiomegaly", *args, "--store", str(small_phantoms / "store")]])
    assert run["code"] == 2, run
    assert message in run["err"] and len(run["err"].strip().splitlines()) == 1, run["err"]
