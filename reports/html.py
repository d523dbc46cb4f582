"""The report page's pieces: one self-contained HTML file that opens offline.

plotly.js is embedded once, gzip-compressed (a third of its size), and unpacked in the browser with the
standard DecompressionStream; each figure is its JSON spec, drawn by one loader script once plotly.js is
ready. Images are compressed PNGs as data URIs. Every string from a spec or a user is escaped here.
"""
from __future__ import annotations

import base64
import gzip
import math
from functools import lru_cache
from html import escape
from pathlib import Path

import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:.8em;margin:1em 0}
.method{background:#eef4fb;border:1px solid #b8cde6;padding:.8em;margin:1em 0}
table{border-collapse:collapse;font-size:90%;margin:.5em 0} td,th{border:1px solid #ccc;padding:.3em .6em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.reproduced td{background:#e6f4ea} tr.contradicted td{background:#fce8e6} tr.inconclusive td{background:#f6f6f6}
tr.sig td{background:#f3f8ee}
#image-table img{width:var(--tile,160px);image-rendering:pixelated;display:block;margin:auto}
#image-table td{text-align:center;font-size:85%;vertical-align:top} .grid{display:inline-block;margin:.5em}
.grid img{image-rendering:pixelated;width:260px} li{margin:.3em 0}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.8em} .muted{color:#666}"""

LOADER = """<script>(async()=>{try{
const b=Uint8Array.from(atob(document.getElementById('plotly-gz').textContent),c=>c.charCodeAt(0));
const js=await new Response(new Blob([b]).stream().pipeThrough(new DecompressionStream('gzip'))).text();
const s=document.createElement('script');s.textContent=js;document.head.appendChild(s);
for(const el of document.querySelectorAll('script.figure-data')){const f=JSON.parse(el.textContent);
await Plotly.newPlot(el.dataset.target,f.data,f.layout,{displaylogo:false,responsive:true});}
document.documentElement.dataset.figures='drawn';}catch(e){console.error('figures: '+e);}})();</script>"""


@lru_cache(maxsize=1)
def _plotly_gz() -> str:
    import plotly.offline

    return base64.b64encode(gzip.compress(plotly.offline.get_plotlyjs().encode(), 9, mtime=0)).decode()


class Figures:
    """Plotly figures as JSON specs in the page; the loader draws them."""

    def __init__(self):
        self.n = 0

    def add(self, fig) -> str:
        if fig is None:
            return ""
        self.n += 1
        target = f"fig-{self.n}"
        spec = fig.to_json(engine="json").replace("</", "<\\/")
        height = int(fig.layout.height or 450)
        return (f'<div class="figure"><div class="plotly-graph-div" id="{target}" style="height:{height}px"></div>'
                f'<script type="application/json" class="figure-data" data-target="{target}">{spec}</script></div>')


def page(title: str, body: str, n_figures: int, built: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{CSS}</style>"
            f"</head><body>{body}<p class='muted'>built {escape(built)}; {n_figures} figures</p>"
            f"<script type='application/octet-stream' id='plotly-gz'>{_plotly_gz()}</script>{LOADER}</body></html>")


def png(path: Path, alt: str, cls: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img class="{cls}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def fixed2(v, missing: str = "not scored") -> str:
    """A score to 2 decimals, as the page's sentences give it; a score that is not a number says so, never "nan".

    >>> fixed2(28.567), fixed2(float("nan")), fixed2(None, "")
    ('28.57', 'not scored', '')
    """
    return f"{v:.2f}" if isinstance(v, (int, float)) and math.isfinite(v) else missing


def sig3(v) -> str:
    """A number to 3 significant figures ('' for a missing one), integers as they are."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if abs(v) >= 1000:  # 1234.5 -> 1,230
            return f"{float(f'{v:.3g}'):,.0f}"
        return f"{v:#.3g}".rstrip(".") if v else "0"  # keeps the zeros that are significant: -2 -> -2.00
    return str(v)


def table(df: pd.DataFrame, table_id: str = "", row_class=None) -> str:
    """An HTML table; numbers to 3 significant figures and right-aligned, everything escaped."""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
    rows = []
    for i, (_, r) in enumerate(df.iterrows()):
        cls = f' class="{row_class(i)}"' if row_class else ""
        cells = "".join(f'<td class="num">{escape(sig3(v))}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
                        else f"<td>{escape('' if v is None else str(v))}</td>" for v in r)
        rows.append(f"<tr{cls}>{cells}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{''.join(rows)}</table>"
