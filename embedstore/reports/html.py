"""One self-contained HTML file: Vega, Vega-Lite and vega-embed inlined once, every chart's spec
embedded as JSON, images as data URIs, and no reference to the network at all.

A small script in the page embeds every chart, collects errors (window.onerror, rejected
promises, console.error) and writes a status line into `<pre id="report-status">`, so a
headless browser (see `browser.py`) can check that every chart rendered.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

# vega-embed's action menu: exporting works offline; "open in editor" and the source views
# would point at vega.github.io, so they are switched off.
EMBED_OPTIONS = {
    "renderer": "svg",
    "mode": "vega-lite",
    "actions": {"export": True, "source": False, "compiled": False, "editor": False},
}


@dataclass
class Chart:
    """An Altair chart turned into a Vega-Lite spec (dict), ready to embed."""

    spec: dict
    caption: str = ""
    inline: bool = False  # sit beside the next inline chart when the page is wide enough


@dataclass
class Table:
    """A small HTML table from a polars DataFrame (numbers formatted, long text folded)."""

    frame: Any
    caption: str = ""


@dataclass
class Note:
    """A short paragraph, e.g. "not run yet: run `embedstore zeroshot`"."""

    text: str
    kind: str = "note"


@dataclass
class Gallery:
    """Images (PNG/JPEG bytes) shown as data URIs with captions."""

    images: list[tuple[bytes, str, str]]  # (bytes, mime, caption)
    caption: str = ""


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    intro: str = ""


@dataclass
class Report:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    @property
    def charts(self) -> list[Chart]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Chart)]


def chart_spec(chart) -> dict:
    """Altair chart -> Vega-Lite dict with every row kept (no 5,000-row limit) and inline data.

    The row limit is lifted only inside this call, so the caller's Altair settings are untouched.
    `$schema` is dropped: vega-embed is told the mode, and the page holds no URL.
    """
    import altair as alt

    with alt.data_transformers.enable("default", max_rows=None):
        spec = chart.to_dict()
    spec.pop("$schema", None)
    return spec


@functools.lru_cache(maxsize=1)
def javascript_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one script (about 0.9 MB), from vl-convert, no CDN."""
    import vl_convert as vlc

    return vlc.javascript_bundle()


def thumbnail(path, max_side: int = 320, quality: int = 80) -> tuple[bytes, str]:
    """Read an image file and return a downscaled JPEG (bytes, mime) to keep the report small."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue(), "image/jpeg"


def _script_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element: `</` cannot close it early; NaN and
    infinities (undefined metrics, e.g. AUROC of a finding without positives) become null."""
    return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False, default=str).replace("</", "<\\/")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if v != v else f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, (dict, list)):
        v = json.dumps(v, default=str)
    return str(v)


def table_html(frame, caption: str = "") -> str:
    cols = list(frame.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for row in frame.iter_rows():
        cells = []
        for v in row:
            text = _cell(v)
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            if len(text) > 120:  # long JSON configs fold away
                text_html = f"<details><summary>{html.escape(text[:60])}…</summary><code>{html.escape(text)}</code></details>"
            else:
                text_html = html.escape(text)
            cells.append(f"<td{cls}>{text_html}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _gallery_html(g: Gallery) -> str:
    items = "".join(
        f'<figure><img alt="{html.escape(cap)}" src="data:{mime};base64,{base64.b64encode(data).decode()}"><figcaption>{html.escape(cap)}</figcaption></figure>'
        for data, mime, cap in g.images
    )
    cap = f"<p class=\"caption\">{html.escape(g.caption)}</p>" if g.caption else ""
    return f'{cap}<div class="gallery">{items}</div>'


def _block_html(block, chart_index: dict) -> str:
    if isinstance(block, Chart):
        i = chart_index[id(block)]
        cap = f'<p class="caption">{html.escape(block.caption)}</p>' if block.caption else ""
        return (
            f'<div class="chart-block{" inline" if block.inline else ""}">{cap}<div class="chart" id="chart-{i}"></div>'
            f'<script type="application/json" id="spec-{i}">{_script_json(block.spec)}</script></div>'
        )
    if isinstance(block, Table):
        return table_html(block.frame, block.caption)
    if isinstance(block, Note):
        return f'<p class="{html.escape(block.kind)}">{_inline_code(block.text)}</p>'
    if isinstance(block, Gallery):
        return _gallery_html(block)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _inline_code(text: str) -> str:
    """Escape text and turn `backticks` into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


# The drop-downs a chart binds (metric, finding) are moved above it: under a tall chart they
# would sit below the fold.
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}
nav{padding:8px 32px;background:#e8ecf1;font-size:13px}
nav a{margin-right:14px;color:#1f3a5f;text-decoration:none}
main{padding:8px 32px 40px;max-width:1500px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:12px 20px;margin:16px 0}
section h2{font-size:18px;margin:4px 0 8px;color:#1f3a5f}
.intro,.caption{font-size:13px;color:#4a5561;margin:4px 0 8px}
.note{font-size:13px;color:#6b5300;background:#fff8e1;border-left:3px solid #e0b100;padding:6px 10px}
.chart-block{margin:10px 0 18px}
.chart-block.inline{display:inline-block;vertical-align:top;margin-right:24px}
.chart{overflow-x:auto}
.chart .chart-wrapper{display:flex;flex-direction:column;align-items:flex-start}
.chart .vega-bindings{order:-1;margin:0 0 6px;font-size:13px}
.table-wrap{overflow-x:auto;margin:8px 0}
table{border-collapse:collapse;font-size:12px}
caption{text-align:left;font-weight:600;padding:4px 0;font-size:13px}
th,td{border-bottom:1px solid #e3e7ec;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px;background:#f0f3f6;padding:1px 3px;border-radius:3px}
details code{display:block;white-space:pre-wrap;max-width:700px}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
.gallery figure{margin:0;width:200px;font-size:11px;color:#4a5561}
.gallery img{width:200px;height:auto;border:1px solid #dde2e8;border-radius:3px}
#report-status{display:none}
"""

# Embeds every chart, then records what rendered and any error, for people (console) and for
# the headless-browser test (the hidden status element).
SCRIPT = """
(function(){
  var errors = [], warnings = [];
  window.addEventListener('error', function(e){ errors.push('error: ' + (e.message || e)); });
  window.addEventListener('unhandledrejection', function(e){ errors.push('rejection: ' + (e.reason && e.reason.message || e.reason)); });
  var origError = console.error, origWarn = console.warn;
  console.error = function(){ errors.push(Array.prototype.join.call(arguments, ' ')); origError.apply(console, arguments); };
  console.warn = function(){ warnings.push(Array.prototype.join.call(arguments, ' ')); origWarn.apply(console, arguments); };
  var opts = __OPTIONS__;
  var n = __N__;
  var jobs = [];
  for (var i = 0; i < n; i++) {
    var el = document.getElementById('spec-' + i);
    var spec;
    try { spec = JSON.parse(el.textContent); } catch (e) { errors.push('chart ' + i + ': bad spec: ' + e); continue; }
    jobs.push(vegaEmbed('#chart-' + i, spec, opts).catch(function(e){ errors.push('embed: ' + e); }));
  }
  Promise.all(jobs).then(function(){
    var rendered = 0;
    for (var i = 0; i < n; i++) {
      var c = document.getElementById('chart-' + i);
      if (c && c.querySelector('svg.marks, canvas.marks')) rendered++;
    }
    var status = document.getElementById('report-status');
    status.textContent = JSON.stringify({charts: n, rendered: rendered, errors: errors, warnings: warnings});
    status.setAttribute('data-done', '1');
  });
})();
"""


def render(report: Report) -> str:
    """The whole report as one HTML string: the JS bundle once, each chart's spec, inline images."""
    chart_index = {id(c): i for i, c in enumerate(report.charts)}
    nav = "".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(report.sections))
    body = []
    for i, s in enumerate(report.sections):
        intro = f'<p class="intro">{_inline_code(s.intro)}</p>' if s.intro else ""
        blocks = "".join(_block_html(b, chart_index) for b in s.blocks)
        body.append(f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>{intro}{blocks}</section>')
    script = SCRIPT.replace("__OPTIONS__", _script_json(EMBED_OPTIONS)).replace("__N__", str(len(chart_index)))
    bundle = javascript_bundle().replace("</script", "<\\/script")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta name="embedstore-charts" content="{len(chart_index)}">'
        f"<title>{html.escape(report.title)}</title><style>{STYLE}</style>"
        f'<script type="text/javascript">{bundle}</script></head><body>'
        f"<header><h1>{html.escape(report.title)}</h1><p>{html.escape(report.subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(body)}</main>"
        f'<pre id="report-status"></pre><script type="text/javascript">{script}</script>'
        "</body></html>\n"
    )
