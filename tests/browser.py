"""Load an HTML file in headless Chromium (Debian's package): DOM after scripts, JS errors, screenshot."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# injected before the report's own scripts: every uncaught error and console.error lands in the DOM, also
# those after load (the figures are drawn once plotly.js is unpacked, asynchronously)
PROBE = """<script>window.__errors=[];const __rec=()=>{document.documentElement.dataset.errors=JSON.stringify(__errors)};
addEventListener('error',e=>{__errors.push(String(e.message));__rec()});
addEventListener('unhandledrejection',e=>{__errors.push(String(e.reason));__rec()});
(()=>{const ce=console.error;console.error=(...a)=>{__errors.push(a.map(String).join(' '));__rec();ce(...a)}})();
addEventListener('load',__rec);
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def load(html_path: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """(DOM after load, JS errors). The page gets no network: a request would fail and show as an error."""
    exe = chromium()
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "page.html"
        probed.write_text(html_path.read_text().replace("<head>", "<head>" + PROBE, 1))
        args = [exe, *FLAGS, f"--user-data-dir={tmp}/profile", "--virtual-time-budget=20000"]
        dom = subprocess.run([*args, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120).stdout
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([*args, f"--screenshot={screenshot}", "--window-size=1280,2400", probed.as_uri()],
                           capture_output=True, timeout=120)
    m = re.search(r'<html[^>]*data-errors="([^"]*)"', dom)
    errors = json.loads(m.group(1).replace("&quot;", '"')) if m else ["the error probe did not run"]
    return dom, errors


def figure_divs(dom: str) -> int:
    return len(re.findall(r'class="plotly-graph-div', dom))


def rendered_figures(dom: str) -> int:
    """Plotly figures that drew: Plotly.newPlot marks the div js-plotly-plot and puts its SVG inside."""
    return len(re.findall(r'class="plotly-graph-div js-plotly-plot"[^>]*><div class="plot-container plotly"'
                          r'[^>]*><div class="user-select-none svg-container"[^>]*><svg class="main-svg"', dom))


def table_rows(dom: str, table_id: str) -> list[dict[str, str]]:
    """The rows of the table with this id, each as {header: cell text}."""
    from html.parser import HTMLParser

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.depth, self.rows, self.cell = 0, [], None

        def handle_starttag(self, tag, attrs):
            if tag == "table" and (self.depth or dict(attrs).get("id") == table_id):
                self.depth += 1
            elif self.depth and tag == "tr":
                self.rows.append([])
            elif self.depth and tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag == "table" and self.depth:
                self.depth -= 1
            elif self.depth and tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append(self.cell.strip())
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    p = Rows()
    p.feed(dom)
    if not p.rows:
        raise AssertionError(f"no table with id {table_id!r} on the page")
    header, *rows = [r for r in p.rows if r]
    return [dict(zip(header, r)) for r in rows]
