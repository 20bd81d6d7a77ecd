"""Read what a report says: the Vega-Lite specs embedded in it and its HTML tables."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser


def specs(text: str) -> list[dict]:
    """Every chart's spec, in page order (`<script type="application/json" id="spec-N">`)."""
    blobs = re.findall(r'<script type="application/json" id="spec-\d+">(.*?)</script>', text, re.S)
    return [json.loads(b) for b in blobs]


def rows(spec: dict) -> list[dict]:
    """Every inline data row of a spec (named datasets and inline values)."""
    out = [r for rs in spec.get("datasets", {}).values() for r in rs]
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and "values" in data:
                out += data["values"]
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    return out


def titled(all_specs: list[dict], words: str) -> list[dict]:
    """The specs whose title (anywhere in the spec) contains `words`."""
    return [s for s in all_specs if words in json.dumps(_titles(s))]


def _titles(node) -> list:
    if isinstance(node, dict):
        return ([node["title"]] if "title" in node else []) + [t for v in node.values() for t in _titles(v)]
    if isinstance(node, list):
        return [t for v in node for t in _titles(v)]
    return []


def has_key(node, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(has_key(v, key) for v in node.values())
    if isinstance(node, list):
        return any(has_key(v, key) for v in node)
    return False


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._caption = self._cell = self._rows = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._rows, self._caption = [], ""
        elif tag == "caption":
            self._cell = []
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "caption":
            self._caption, self._cell = "".join(self._cell).strip(), None
        elif tag in ("td", "th") and self._cell is not None:
            self._rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table" and self._rows is not None:
            self.tables[self._caption] = self._rows
            self._rows = None


def tables(text: str) -> dict[str, list[dict]]:
    """caption -> the table's rows as dicts keyed by the header cells."""
    parser = _Tables()
    parser.feed(text)
    out = {}
    for caption, table in parser.tables.items():
        head, *body = table
        out[caption] = [dict(zip(head, r)) for r in body]
    return out
