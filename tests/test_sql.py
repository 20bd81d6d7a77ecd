"""sql: read-only unless --write, DuckDB's message for bad SQL, named queries give true counts."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_helpers import build_store  # noqa: E402

from embedstore.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("sql"), n=12)


def _cli(*args):
    """`embedstore ARGS` in a new process, through the real entry point (`python -m embedstore`)."""
    return subprocess.run([sys.executable, "-m", "embedstore", *args], capture_output=True, text=True, timeout=120)


def _main(capsys, *args) -> tuple[int, str, str]:
    """`embedstore ARGS` in this process (`embedstore.cli.main`): (exit code, stdout, stderr)."""
    from embedstore.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_writes_refused_without_write(built):
    st, _ = built
    for stmt in ["DELETE FROM images", "INSERT INTO errors (reason) VALUES ('x')", "DROP TABLE labels",
                 "UPDATE images SET view = 'x'"]:
        with pytest.raises(InputError, match="add --write"):
            st.sql(stmt)
    assert st.sql("SELECT count(*) AS n FROM images")["n"][0] == 12
    out = _cli("sql", "DELETE FROM images", "--store", str(st.path))
    assert out.returncode == 2 and out.stderr.strip().startswith("error:") and "--write" in out.stderr
    assert "Traceback" not in out.stderr


def test_write_allowed_with_flag(tmp_path):
    st, _ = build_store(tmp_path, n=3)
    st.sql("INSERT INTO errors (image_id, reason) VALUES ('manual', 'note')", write=True)
    assert st.sql("SELECT image_id FROM errors")["image_id"].to_list() == ["manual"]


def test_bad_sql_gives_duckdb_message(built, capsys):
    st, _ = built
    with pytest.raises(InputError, match="(?i)parser error|syntax"):
        st.sql("SELEC 1")
    code, _, err = _main(capsys, "sql", "SELECT nope FROM images", "--store", str(st.path))
    assert code == 2 and "nope" in err and "Traceback" not in err


def test_named_queries_match_independent_counts(built):
    st, ds = built
    prev = st.sql(file="label-prevalence")
    want = Counter(f for r in ds.records for f, v in r.labels.items() if v == 1)
    got = {r["finding"]: r["positive"] for r in prev.iter_rows(named=True)}
    assert {f: got.get(f, 0) for f in want} == dict(want)
    unc = Counter(f for r in ds.records for f, v in r.labels.items() if v == -1)
    assert {r["finding"]: r["uncertain"] for r in prev.iter_rows(named=True) if r["uncertain"]} == dict(unc)
    pairs = Counter(tuple(sorted(p)) for r in ds.records
                    for p in combinations([f for f, v in r.labels.items() if v == 1], 2))
    co = st.sql(file="co-occurrence")
    assert {(r["finding_a"], r["finding_b"]): r["images"] for r in co.iter_rows(named=True)} == dict(pairs)
    views = Counter((r.view, r.projection, r.split) for r in ds.records)
    pv = st.sql(file="per-view-counts")
    assert {(r["view"], r["projection"], r["split"]): r["images"] for r in pv.iter_rows(named=True)} == dict(views)
    vs = st.sql(file="version-summary")
    assert vs["images"].to_list() == [len(ds.records)]
    assert st.sql(file="errors").height == 0
    with pytest.raises(InputError, match="known: co-occurrence"):
        st.sql(file="nope")


def test_cli_versions_and_sql_formats(built, capsys):
    st, _ = built
    code, out, _ = _main(capsys, "versions", "--store", str(st.path), "--format", "csv")
    assert code == 0 and out.splitlines()[1].startswith("v1,")
    code, out, _ = _main(capsys, "sql", "--file", "per-view-counts", "--store", str(st.path), "--format", "json")
    assert code == 0 and '"images"' in out


def test_table_cells_and_headers_print_as_written(built, capsys):
    """rich markup (`[/]`, `[bold]`) and emoji codes (`:x:`) in data or column names are text."""
    from embedstore.cli import main

    st, _ = built
    cells = ["Opacity [/RUL]", ":x: :smile:", "[bold]x[/bold]", "[/]"]
    select = ", ".join(f"'{c}' AS c{i}" for i, c in enumerate(cells))
    with pytest.raises(SystemExit) as exc:
        main(["sql", f'SELECT {select}, 1 AS "[red]h[/red]"', "--store", str(st.path)])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for text in [*cells, "[red]h[/red]"]:
        assert text in out, (text, out)
    assert "❌" not in out and "😄" not in out
