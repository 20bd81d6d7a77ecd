"""`encode --engine ...` options refused before anything is read or written (no Ray cluster started):
one `error:` line naming the value and the fix, exit 2, no store created."""

from __future__ import annotations

import socket

import pytest

from embedstore.cli import main


def refused(capsys, tmp_path, *args: str) -> str:
    store = tmp_path / "st"
    with pytest.raises(SystemExit) as exc:
        main(["encode", str(tmp_path / "no-such-data"), "--model", "phantom-clip", "--store", str(store), *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not store.exists()
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, fragments", [
    (["--engine", "spark"], ["--engine 'spark'", "local or ray"]),
    (["--ray-address", "auto"], ["--ray-address", "--engine ray"]),
    (["--ray-actors", "2"], ["--ray-actors", "--engine ray"]),
    (["--engine", "ray", "--ray-actors", "0"], ["--ray-actors 0", "1 or more"]),
    (["--engine", "ray", "--ray-gpus-per-worker", "-1"], ["--ray-gpus-per-worker -1", "0"]),
    (["--engine", "ray", "--ray-address", "head-node"], ["--ray-address 'head-node'", "HOST:PORT"]),
])
def test_engine_options_are_checked_first(capsys, tmp_path, args, fragments):
    line = refused(capsys, tmp_path, *args)
    assert all(f in line for f in fragments), line


def test_an_address_where_no_head_node_answers_is_named(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("embedstore.data.datasets.read_dataset", lambda *a, **k: pytest.fail("read before the check"))
    port = free_port()
    line = refused(capsys, tmp_path, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}")
    assert f"--ray-address 127.0.0.1:{port}" in line and "ray start --head" in line, line
