"""Label prompts from `prompts.toml`: several positive and negative phrasings per finding."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _config() -> dict:
    return tomllib.loads(resources.files("embedstore.data").joinpath("prompts.toml").read_text())


def _key(name: str) -> str:
    return name.replace("_", " ").casefold().strip()


def _entry(finding: str) -> dict:
    table = _config().get("findings", {})
    by_key = {_key(k): v for k, v in table.items()}
    return by_key.get(_key(finding)) or {"term": _key(finding)}


def prompts_for(finding: str) -> list[dict]:
    """Prompt rows {finding, polarity, template, text} for one finding (unknown names use
    the generic templates with the name as the term)."""
    cfg = _config()
    entry = _entry(finding)
    rows: list[dict] = []
    for polarity in ("positive", "negative"):
        if entry.get("templates", True):
            for tpl in cfg["templates"][polarity]:
                rows.append({"finding": finding, "polarity": polarity, "template": tpl,
                             "text": tpl.format(term=entry["term"])})
        for text in entry.get(polarity, []):
            rows.append({"finding": finding, "polarity": polarity, "template": "", "text": text})
    seen: set[tuple[str, str]] = set()
    return [r for r in rows if (r["polarity"], r["text"]) not in seen and not seen.add((r["polarity"], r["text"]))]


def prompt_table(findings: list[str]):
    """A polars DataFrame of the prompts of every finding (finding, polarity, template, text)."""
    import polars as pl

    rows = [row for f in findings for row in prompts_for(f)]
    return pl.DataFrame(rows, schema={"finding": pl.String, "polarity": pl.String, "template": pl.String, "text": pl.String})
