"""`embedstore encode --engine ray` on a local Ray cluster of 2 CPUs bound to the loopback interface.

- `encode --engine ray` starts (and stops) a cluster of its own;
- a head node started here with `ray start --head --num-cpus 2` (and stopped by its own PIDs,
  never `ray stop`, which would stop every Ray process of the user) is joined with
  `--ray-address auto`;
- a Ray encode SIGKILLed after its first shards is run again with the same command: it stores the
  whole shards the killed job left, encodes only the rest, and every image is stored once.

Each time the vectors equal the local engine's (same ids, cosine >= 0.9999), `verify` passes and
every node address is loopback. Ray is found through $RAY_TMPDIR (a folder of this module's own).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import embedstore
from embedstore.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # each starts a local Ray cluster: 20-60 s

ROOT = str(Path(embedstore.__file__).resolve().parent.parent)  # this checkout: Ray's workers import it too
MODEL = ["--model", "phantom-clip", "--device", "cpu", "--workers", "1"]  # a local cluster of 1 + 1 actor = 2 CPUs
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}


def ray_env(tmp: str) -> dict:
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **LOOPBACK_ENV, "RAY_TMPDIR": tmp, "PYTHONPATH": path}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    from embedstore.synth import synth

    out = tmp_path_factory.mktemp("encode-ray") / "phantoms"
    synth(str(out), studies=16, seed=5, size=64, workers=1)
    return out


def encode(capsys, *args: str) -> tuple[int, dict, str]:
    with pytest.raises(SystemExit) as exc:
        main(["encode", *args, "--format", "json"])
    out = capsys.readouterr()
    return exc.value.code, json.loads(out.out) if out.out.strip() else {}, out.err


def vectors(store: Path) -> dict[str, np.ndarray]:
    frame = embedstore.open(store).sql("SELECT i.image_id, e.id, e.vector FROM image_embeddings e JOIN images i USING (id)")
    return {(row["image_id"], row["id"]): np.asarray(row["vector"], np.float32) for row in frame.iter_rows(named=True)}


@pytest.fixture(scope="module")
def local_vectors(phantoms, tmp_path_factory):
    store = tmp_path_factory.mktemp("local") / "st"
    with pytest.raises(SystemExit) as exc:
        main(["encode", str(phantoms), *MODEL, "--store", str(store), "--format", "json"])
    assert exc.value.code == 0
    return vectors(store)


def same_as_local(store: Path, local: dict) -> None:
    got = vectors(store)
    assert sorted(got) == sorted(local)  # the same (image_id, id) pairs
    cosine = [float(got[k] @ local[k] / np.linalg.norm(got[k]) / np.linalg.norm(local[k])) for k in local]
    assert min(cosine) >= 0.9999, min(cosine)


def verify_ok(store: Path) -> None:
    report = embedstore.open(store).verify()
    assert report["ok"].all(), report.filter(~report["ok"]).rows()


def nodes_of(err: str) -> list[str]:
    line = next(line for line in err.splitlines() if line.startswith("ray: ") and "node(s): " in line)
    return line.split("node(s): ", 1)[1].split(", ")


def all_loopback(nodes: list[str]) -> bool:
    return bool(nodes) and all(ipaddress.ip_address(n).is_loopback for n in nodes)


def children_named(*names: str) -> list[int]:
    """PIDs of this process's children with one of these command names (Ray's daemons)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm, rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        if int(rest.split()[1]) == os.getpid() and comm.split("(", 1)[1] in names and rest.split()[0] != "Z":
            found.append(int(pid))
    return found


def test_encode_starts_its_own_loopback_cluster_and_stores_what_the_local_engine_does(
        phantoms, local_vectors, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="es-ray-"))
    store = tmp_path / "st"
    code, result, err = encode(capsys, str(phantoms), *MODEL, "--engine", "ray", "--store", str(store))
    assert code == 0, err
    assert result["engine"] == "ray" and result["encoded"] == len(local_vectors) and result["recovered"] == 0
    assert all_loopback(nodes_of(err)), err
    same_as_local(store, local_vectors)
    verify_ok(store)
    assert not children_named("gcs_server", "raylet")  # the cluster it started is gone
    # the same command again: everything is stored, nothing is encoded
    code, again, err = encode(capsys, str(phantoms), *MODEL, "--engine", "ray", "--store", str(store))
    assert code == 0 and again["encoded"] == 0 and again["skipped"] == len(local_vectors), err


def session_members(sid: int) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(pid))
    return out


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --num-cpus 2 --block` in a session of its own; stopped by the PIDs of that session."""
    tmp = tempfile.mkdtemp(prefix="es-ray-")  # short: Ray's socket paths must stay under 108 bytes
    log = open(Path(tmp) / "ray-start.log", "w")
    ray_cli = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen([ray_cli, "start", "--head", "--num-cpus", "2", "--port", "0", "--include-dashboard=false",
                             "--disable-usage-stats", "--block"], env=ray_env(tmp), start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)
    current = Path(tmp) / "ray" / "ray_current_cluster"
    try:
        for _ in range(600):  # at most 60 s
            if proc.poll() is not None or (current.exists() and current.read_text().strip()):
                break
            time.sleep(0.1)
        assert proc.poll() is None and current.exists(), (Path(tmp) / "ray-start.log").read_text()[-2000:]
        yield {"tmp": tmp, "address": current.read_text().strip(), "pid": proc.pid}
    finally:
        for sig, rounds in ((signal.SIGTERM, 50), (signal.SIGKILL, 50)):
            for pid in session_members(proc.pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            for _ in range(rounds):
                if not session_members(proc.pid):
                    break
                time.sleep(0.1)
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
        assert not session_members(proc.pid)


def test_auto_joins_a_running_head_node(phantoms, local_vectors, ray_head, tmp_path, capsys, monkeypatch):
    assert ipaddress.ip_address(ray_head["address"].rsplit(":", 1)[0]).is_loopback
    monkeypatch.setenv("RAY_TMPDIR", ray_head["tmp"])
    store = tmp_path / "st"
    code, result, err = encode(capsys, str(phantoms), *MODEL, "--engine", "ray", "--ray-address", "auto",
                               "--store", str(store))
    assert code == 0, err
    assert result["engine"] == "ray" and result["encoded"] == len(local_vectors)
    assert all_loopback(nodes_of(err)), err
    same_as_local(store, local_vectors)
    verify_ok(store)
    assert session_members(ray_head["pid"]) and ray_head["pid"] in session_members(ray_head["pid"])  # only disconnected


def whole_shard_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    rows = 0
    for shard in folder.glob("*.parquet"):
        try:
            rows += pq.read_metadata(shard).num_rows
        except Exception:  # noqa: BLE001 - cut off by the kill
            pass
    return rows


def test_a_killed_ray_encode_run_again_encodes_only_what_is_missing(phantoms, local_vectors, ray_head, tmp_path,
                                                                    capsys, monkeypatch):
    store = tmp_path / "st"
    args = [str(phantoms), *MODEL, "--engine", "ray", "--ray-address", "auto", "--batch-size", "1", "--store", str(store)]
    proc = subprocess.Popen([sys.executable, "-m", "embedstore", "encode", *args, "--format", "json"],
                            env=ray_env(ray_head["tmp"]), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = store / "shards" / "v1"
    try:
        for _ in range(1200):  # at most 120 s: until the first whole shard is written
            if proc.poll() is not None or (shards.is_dir() and whole_shard_rows(shards)):
                break
            time.sleep(0.05)
        running = proc.poll() is None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, err = proc.communicate(timeout=30)
    assert running, f"the encode ended before it could be killed: {err.decode()[-2000:]}"
    left, still = whole_shard_rows(shards), 0
    for _ in range(200):  # at most 20 s: a write task of the killed job may still finish its file
        time.sleep(0.1)
        now = whole_shard_rows(shards)
        still = still + 1 if now == left else 0
        left = now
        if still >= 15:
            break
    total = len(local_vectors)
    assert 0 < left < total, left
    report = embedstore.open(store).verify()
    assert not report.filter(report["check"] == "shards")["ok"].item()  # verify names the shards waiting

    monkeypatch.setenv("RAY_TMPDIR", ray_head["tmp"])
    code, result, err = encode(capsys, *args)
    assert code == 0, err
    assert result["recovered"] == left and result["encoded"] == total - left and result["skipped"] == 0, result
    once = embedstore.open(store).sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM image_embeddings")
    assert once.row(0) == (total, total)
    assert not list(shards.glob("*.parquet"))
    same_as_local(store, local_vectors)
    verify_ok(store)
