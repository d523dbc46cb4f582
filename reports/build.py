"""One self-contained HTML report per study, built from its directory (no running Ray needed).

Opens offline: plotly.js is embedded once, images are embedded as data URIs, nothing is
fetched. Every string that comes from a spec or a user is escaped.
"""
from __future__ import annotations

import base64
import json
import time
from html import escape
from pathlib import Path

import pandas as pd

from reports import figures as F
from reports.stats import findings

UNITS = {"psnr": "dB", "ssim": "", "bits_per_dim": "bits/dim"}
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:.8em;margin:1em 0}
.finding{margin:.3em 0} table{border-collapse:collapse;font-size:90%} td,th{border:1px solid #ccc;padding:.3em .6em}
.grid{display:inline-block;margin:.5em;vertical-align:top} .grid img{image-rendering:pixelated;width:420px}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.8em} .muted{color:#666}"""


def unit_of(metric: str) -> str:
    return next((u for k, u in UNITS.items() if metric.startswith(k)), "")


def build_report(sdir: Path) -> Path:
    from studies.records import read_records, trials_table
    from studies.runner import best_dir
    from studies.spec import StudySpec

    sdir = Path(sdir)
    info = json.loads((sdir / "study.json").read_text())
    spec = StudySpec.model_validate(info["spec"])
    records = read_records(sdir)
    table = trials_table(sdir, spec)
    unit = unit_of(spec.metric)
    fig_html: list[str] = []

    def fig(f) -> str:
        if f is None:
            return ""
        fig_html.append(f.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))
        return f'<div class="figure">{fig_html[-1]}</div>'

    finished = int(table.status.isin(["completed", "stopped", "failed"]).sum()) if not table.empty else 0
    running_now = info["runs"][-1].get("end") is None if info.get("runs") else False
    partial = finished < info["planned"] or running_now
    parts = [f"<h1>{escape(spec.name)}</h1>"]
    if partial:
        running = int((table.status == "running").sum()) if not table.empty else 0
        parts.append(f'<div class="banner" id="partial"><b>Partial report:</b> {finished} of {info["planned"]} '
                     f'planned trials have finished ({running} running). Findings may change.</div>')

    # 1. the question and the answer
    parts.append('<h2 id="findings">The question and the answer</h2>')
    parts.append(f"<p>{escape(spec.description)}</p>")
    parts.append(f'<p class="muted">Comparisons use the final {escape(spec.metric)} of the confirm runs '
                 f"(each cell's best configuration re-run over seeds); intervals are 95% t-intervals, "
                 f"differences use Welch's t-test.</p><ul>")
    parts += [f'<li class="finding">{escape(s)}</li>' for s in findings(table, spec, unit)]
    parts.append("</ul>")

    # 2. the comparison figure
    s = F.summary(table, spec)
    parts.append('<h2 id="comparison">Comparison</h2>')
    if not s.empty:
        parts += _comparison(spec, s, table, unit, fig, info)
    else:
        parts.append("<p>No confirm run has finished yet.</p>")

    # 3. image grids
    what = ("samples, and one chain from x_T to x_0" if spec.task == "ddpm"
            else "validation crops: clean / noisy / output")
    parts.append(f'<h2 id="images">Images of each cell\'s best model: {what}</h2>')
    for cell in info["cells"]:
        for name in ("grid.png", "samples.png", "progress.png"):
            p = best_dir(sdir, cell) / name
            if p.exists():
                data = base64.b64encode(p.read_bytes()).decode()
                parts.append(f'<div class="grid"><div>{escape(cell)} ({name[:-4]})</div>'
                             f'<img alt="{escape(cell)}" src="data:image/png;base64,{data}"></div>')

    # 4. learning curves
    parts.append('<h2 id="curves">Learning curves</h2>' + fig(F.learning_curves(records, spec)))

    # 5. tuning
    parts.append('<h2 id="tuning">Tuning</h2>')
    parts += _tuning(info, spec, fig)
    parts.append(fig(F.parallel(table, spec)))

    # 6. best configuration per cell, and how it ran
    parts.append('<h2 id="best">Best configuration per cell</h2>' + _best_table(table, spec))
    parts.append('<h2 id="run">How it ran</h2>' + _how_it_ran(info, table))

    body = "\n".join(parts)
    import plotly.offline

    html = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(spec.name)} report</title>"
            f"<style>{CSS}</style><script>{plotly.offline.get_plotlyjs()}</script></head><body>{body}"
            f"<p class='muted'>built {time.strftime('%Y-%m-%d %H:%M:%S')}; {len(fig_html)} figures</p></body></html>")
    out = sdir / "report.html"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out


def _comparison(spec, s, table, unit, fig, info) -> list[str]:
    kind = spec.figure or spec.name
    factors = list(spec.compare)
    out = []
    if kind == "n2n_loss" and {"noise", "loss"} <= set(factors):
        out.append(fig(F.heatmap(s, spec, "noise", "loss", unit)))
    elif kind == "clean_vs_noisy" and "target" in factors and len(factors) == 2:
        other = next(f for f in factors if f != "target")
        out.append(fig(F.gap(s, other, "target", "noisy", "clean", unit)))
    elif kind == "noise_level":
        out += [fig(f) for f in F.level_grid(table, spec, unit)]
    elif kind == "architectures":
        out.append(fig(F.pareto(s, spec, unit)))
    elif spec.task == "ddpm" and "schedule" in factors:
        T = sorted({int(v) for v in s.get("T", [])}) if "T" in s else [1000]
        out.append(fig(F.schedule_curves(sorted(s["schedule"].unique()), T or [1000])))
    elif len(factors) == 2:
        out.append(fig(F.heatmap(s, spec, factors[0], factors[1], unit)))
    out.append(fig(F.bars(s, spec, unit)))
    also = [f"final.{m}" for m in spec.also if f"final.{m}" in s]
    cols = [*factors, "mean", "lo", "hi", "n", *also]
    out.append(_html_table(s[cols].rename(columns={"mean": f"mean {spec.metric}", "lo": "95% CI low", "hi": "95% CI high",
                                                   "n": "seeds", **{a: f"mean {a[6:]}" for a in also}})))
    return out


def _tuning(info, spec, fig) -> list[str]:
    out = []
    if not spec.tune:
        return ["<p>This study tunes nothing: every cell runs its fixed configuration.</p>"]
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        for cell in info["cells"]:
            try:
                study = optuna.load_study(study_name=f"{spec.name}:{cell}", storage=info["optuna_storage"])
            except KeyError:
                continue
            if study.trials:
                out.append(f"<h3>{escape(cell)}</h3>" + "".join(fig(f) for f in F.tuning(study, spec)))
    except Exception as e:  # noqa: BLE001 - an unreadable Optuna storage still leaves a useful report
        out.append(f"<p>Optuna storage could not be read: {escape(str(e).splitlines()[0])}</p>")
    return out


def _best_table(table: pd.DataFrame, spec) -> str:
    conf = table[(table.phase == "confirm")] if not table.empty else table
    if conf.empty:
        return "<p>No confirm runs yet.</p>"
    rows = conf.groupby("cell", sort=False).first()[["params"]].reset_index()
    return _html_table(rows)


def _how_it_ran(info, table: pd.DataFrame) -> str:
    runs = info.get("runs", [])
    wall = sum(((r.get("end") or time.time()) - r["start"]) for r in runs)
    dur = table["duration_s"].fillna(0) if "duration_s" in table else pd.Series(dtype=float)
    gpu_h = float((dur * table["gpus"].fillna(0)).sum() / 3600) if not table.empty else 0.0
    counts = table.status.value_counts().to_dict() if not table.empty else {}
    parts = [f"<p>Budget <b>{escape(str(info['budget']))}</b>: {info['planned']} planned trials "
             f"({len(info['cells'])} cells x ({info['trials_per_cell']} tuning + {info['seeds']} confirm)); "
             f"trials by status: {escape(json.dumps(counts))}. Wall time {wall / 60:.1f} min over {len(runs)} "
             f"run(s); trial-hours {dur.sum() / 3600:.2f}; GPU-hours {gpu_h:.2f}.</p>"]
    failed = table[table.status == "failed"] if not table.empty else table
    if not failed.empty:
        parts.append('<h3 id="failures">Failed trials</h3>' + _html_table(failed[["trial_id", "cell", "phase", "attempts", "error"]]))
    if runs:
        last = runs[-1]
        parts.append(f"<p>Command: <code>{escape(last.get('command') or '')}</code></p>")
        parts.append(f"<p>Ray cluster: {last.get('nodes', '?')} node(s), resources "
                     f"<code>{escape(json.dumps({k: v for k, v in last.get('resources', {}).items() if not k.startswith('node:')}))}</code></p>")
        parts.append(f"<p>Versions: <code>{escape(json.dumps(last.get('versions', {})))}</code></p>")
    return "".join(parts)


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, float_format=lambda v: f"{v:.3f}", na_rep="")
