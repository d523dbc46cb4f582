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

from denoise_core.tasks import TASKS
from reports import figures as F
from reports.stats import confirm_values, findings, headlines, question_factor, score_column
from reports.verdicts import verdicts
from studies.spec import StudySpec, cell_key
from studies.store import DIVERGED, FAILED, FINISHED, best_dir, read_info, read_records, trials_table

UNITS = {"psnr": "dB", "ssim": "", "bits_per_dim": "bits/dim"}
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:.8em;margin:1em 0}
.finding{margin:.3em 0} table{border-collapse:collapse;font-size:90%} td,th{border:1px solid #ccc;padding:.3em .6em}
.grid{display:inline-block;margin:.5em;vertical-align:top} .grid img{image-rendering:pixelated;width:420px}
#image-table img.whole{width:220px;image-rendering:pixelated} #image-table td{text-align:center;font-size:85%}
tr.reproduced td{background:#e6f4ea} tr.contradicted td{background:#fce8e6} tr.inconclusive td{background:#f6f6f6}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.8em} .muted{color:#666}"""


def unit_of(metric: str) -> str:
    return next((u for k, u in UNITS.items() if metric.startswith(k)), "")


def build_report(sdir: Path) -> Path:
    """Write <study>/report.html from the stored results; returns its path."""
    sdir = Path(sdir)
    info = read_info(sdir)
    spec = StudySpec.model_validate(info["spec"])
    table = trials_table(sdir, spec)
    figs = Figures()
    sections = [_header(spec, info, table), _verdicts(spec, info, table), _findings(spec, table),
                _comparison(spec, table, figs, info),
                _images(spec, info, sdir), '<h2 id="curves">Learning curves</h2>' + figs.add(
                    F.learning_curves(read_records(sdir), spec)),
                _tuning(info, spec, table, figs) + figs.add(F.parallel(table, spec)),
                '<h2 id="best">Best configuration per cell</h2>' + _best_table(table, spec),
                '<h2 id="run">How it ran</h2>' + _how_it_ran(info, table)]
    return _write(sdir / "report.html", spec, "\n".join(sections), len(figs.html))


class Figures:
    """Plotly figures as HTML fragments (plotly.js itself is embedded once, in the head)."""

    def __init__(self):
        self.html: list[str] = []

    def add(self, f) -> str:
        if f is None:
            return ""
        self.html.append(f.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))
        return f'<div class="figure">{self.html[-1]}</div>'


def _write(out: Path, spec, body: str, n_figures: int) -> Path:
    import plotly.offline

    html = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(spec.name)} report</title>"
            f"<style>{CSS}</style><script>{plotly.offline.get_plotlyjs()}</script></head><body>{body}"
            f"<p class='muted'>built {time.strftime('%Y-%m-%d %H:%M:%S')}; {n_figures} figures</p></body></html>")
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out


def _header(spec, info, table: pd.DataFrame) -> str:
    parts = [f"<h1>{escape(spec.name)}</h1>"]
    finished = int(table.status.isin(FINISHED).sum()) if not table.empty else 0
    running_now = info["runs"][-1].get("end") is None if info.get("runs") else False
    if finished < info["planned"] or running_now:
        running = int((table.status == "running").sum()) if not table.empty else 0
        parts.append(f'<div class="banner" id="partial"><b>Partial report:</b> {finished} of {info["planned"]} '
                     f'planned trials have finished ({running} running). Findings may change.</div>')
    return "".join(parts)


METHOD = ("Scores are the confirm runs' (each cell's best configuration re-run over seeds) {score}. "
          "Differences use Welch's t-test; each family of comparisons (the findings; the claims) is corrected "
          "for multiple testing by Benjamini-Hochberg at a false discovery rate of 5%, and its intervals are "
          "false-coverage-rate adjusted (Benjamini & Yekutieli 2005, level 1 - R x 5% / m for R discoveries "
          "among m comparisons), so a difference is significant exactly when its interval excludes zero.")


def _score_words(spec, table: pd.DataFrame) -> str:
    conf = confirm_values(table, spec.metric)
    if not conf.empty and score_column(conf, spec.metric).startswith("final.test_"):
        return (f"{spec.metric} on the held-out test split, with the weights of each run's best validation "
                f"evaluation (tuning and early stopping saw only the validation split)")
    return f"final validation {spec.metric} (this study was stored before test scores existed)"


def _verdicts(spec, info, table: pd.DataFrame) -> str:
    if not spec.expect:
        return ""
    unit = unit_of(spec.metric)
    steps = _steps(table)
    rows = []
    for v in verdicts(table, spec, unit):
        c = v.claim
        where = ", ".join(f"{k}={x}" for k, x in c.where.items())
        src_steps = f"{c.source_steps:,}" if c.source_steps else "not stated"
        rows.append(f'<tr class="verdict {v.verdict.replace(" ", "-")}"><td>{escape(c.claim)}</td>'
                    f"<td>{escape(c.source)}</td><td>{escape(f'{c.a} vs {c.b}' + (f' ({where})' if where else ''))}</td>"
                    f"<td>{escape(v.effect)}</td><td><b>{escape(v.verdict)}</b></td>"
                    f"<td>{escape(steps)} here ({escape(str(info['budget']))}); {escape(src_steps)} in the source</td></tr>")
    return ('<h2 id="verdicts">Verdicts: the literature\'s claims at this budget</h2>'
            '<table id="verdict-table"><tr><th>claim</th><th>source</th><th>compared</th><th>this run\'s effect '
            f"(a minus b, in a's favour)</th><th>verdict</th><th>training steps</th></tr>{''.join(rows)}</table>"
            '<p class="muted">A claim not reproduced at a small budget is not refuted: the source trained far '
            "longer. Reproduced and contradicted verdicts need the corrected interval to exclude zero (or, for "
            '"same", to lie within / beyond the margin).</p>')


def _steps(table: pd.DataFrame) -> str:
    conf = table[table.phase == "confirm"] if not table.empty else table
    if conf.empty or "final.step" not in conf:
        return "?"
    return f"{int(conf['final.step'].max()):,}"


def _findings(spec, table: pd.DataFrame) -> str:
    unit = unit_of(spec.metric)
    parts = ['<h2 id="findings">The question and the answer</h2>', f"<p>{escape(spec.description)}</p>"]
    heads = headlines(table, spec, unit)
    if heads:
        parts.append('<h3 id="answer">Answer</h3><ul>' + "".join(f'<li class="headline">{escape(h)}</li>' for h in heads)
                     + "</ul>")
    parts.append(f'<p class="muted">{escape(METHOD.format(score=_score_words(spec, table)))}</p>')
    parts.append('<h3 id="pairwise">Every comparison</h3><ul>')
    parts += [f'<li class="finding">{escape(s)}</li>' for s in findings(table, spec, unit)]
    return "".join(parts) + "</ul>"


def _comparison(spec, table: pd.DataFrame, figs: Figures, info) -> str:
    s = F.summary(table, spec)
    if s.empty:
        return '<h2 id="comparison">Comparison</h2><p>No confirm run has finished yet.</p>'
    unit = unit_of(spec.metric)
    factors = list(spec.compare)
    out = ['<h2 id="comparison">Comparison</h2>']
    kind = spec.comparison_figure()
    if kind == "heatmap" and len(factors) >= 2:
        q = question_factor(spec)
        other = next(f for f in factors if f != q)
        out.append(figs.add(F.heatmap(s, spec, other, q, unit)))
    elif kind == "gap":
        q = question_factor(spec)
        levels = [lab for lab, _ in spec.factor_levels(q)]
        other = next((f for f in factors if f != q), q)
        out.append(figs.add(F.gap(s, other, q, levels[-1], levels[0], unit)))
    elif kind == "levels":
        out += [figs.add(f) for f in F.level_grid(table, spec, unit)]
    elif kind == "pareto":
        out.append(figs.add(F.pareto(s, spec, unit)))
    schedules = F.schedules_compared(spec)
    if schedules:
        out.append(figs.add(F.schedule_curves(*schedules)))
    out.append(figs.add(F.bars(s, spec, unit)))
    also = [f"final.{m}" for m in spec.also if f"final.{m}" in s]
    cols = [*factors, "mean", "lo", "hi", "n", "diverged", *also]
    out.append(_html_table(s[cols].rename(columns={
        "mean": f"mean {spec.metric}", "lo": "95% CI low", "hi": "95% CI high", "n": "seeds",
        "diverged": "diverged seeds", **{a: f"mean {a[6:]}" for a in also}})))
    return "".join(out)


def _png(path: Path, alt: str, cls: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="{cls}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _images(spec, info, sdir: Path) -> str:
    task = TASKS.get(spec.task)
    parts = [f'<h2 id="images">Images of each cell\'s best model: {escape(task.images_caption)}</h2>']
    for name in task.images:
        if name == "image_output":
            parts.append(_image_table(spec, sdir))
            continue
        for cell in info["cells"]:
            p = best_dir(sdir, cell) / f"{name}.png"
            if p.exists():
                parts.append(f'<div class="grid"><div>{escape(cell)} ({name})</div>{_png(p, cell)}</div>')
    return "".join(parts)


def _image_table(spec, sdir: Path) -> str:
    """One whole validation image: a row per slice of the other factors (its noisy input first), a column
    per level of the question factor (its best model's output)."""
    q = question_factor(spec)
    levels = [lab for lab, _ in spec.factor_levels(q)]
    rows: dict[tuple, dict[str, str]] = {}
    for cell in spec.cells():
        key = cell_key(cell)
        rows.setdefault(tuple((f, v) for f, v in cell.items() if f != q), {})[cell[q]] = key
    head = "".join(f"<th>{escape(q)}={escape(lv)}</th>" for lv in levels)
    body = []
    for slice_, cells in rows.items():
        first = best_dir(sdir, next(iter(cells.values())))
        if not (first / "image_noisy.png").exists():
            continue
        label = ", ".join(f"{f}={v}" for f, v in slice_) or "input"
        tds = [f"<td>{_png(first / 'image_noisy.png', f'noisy: {label}', 'whole')}<div>noisy input</div></td>"]
        for lv in levels:
            p = best_dir(sdir, cells.get(lv, "")) / "image_output.png"
            tds.append(f"<td>{_png(p, cells[lv], 'whole')}</td>" if lv in cells and p.exists() else "<td></td>")
        body.append(f"<tr><th>{escape(label)}</th>{''.join(tds)}</tr>")
    if not body:
        return ""
    return (f'<table id="image-table"><tr><th></th><th>noisy input</th>{head}</tr>{"".join(body)}</table>')


def _tuning(info, spec, table: pd.DataFrame, figs: Figures) -> str:
    out = ['<h2 id="tuning">Tuning</h2>']
    if not spec.tune_for(info["budget"]):
        return out[0] + "<p>This study tunes nothing: every cell runs its fixed configuration.</p>"
    out.append(figs.add(F.tuning_view(table, spec)))
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        studies = []
        for cell in info["cells"]:
            try:
                studies.append(optuna.load_study(study_name=f"{spec.name}:{cell}", storage=info["optuna_storage"]))
            except KeyError:
                continue
        imp = F.importances(studies)
        out.append(figs.add(imp) if imp else '<p class="muted">Parameter importances are not shown: they need two '
                   "or more tuned parameters and at least 8 completed tuning trials per cell.</p>")
    except Exception as e:  # noqa: BLE001 - an unreadable Optuna storage still leaves a useful report
        out.append(f"<p>Optuna storage could not be read: {escape(str(e).splitlines()[0])}</p>")
    return "".join(out)


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
    failed = table[table.status.isin([FAILED, DIVERGED])] if not table.empty else table
    if not failed.empty:
        parts.append('<h3 id="failures">Failed and diverged trials</h3>'
                     + _html_table(failed[["trial_id", "cell", "phase", "status", "attempts", "error"]]))
    if runs:
        last = runs[-1]
        parts.append(f"<p>Command: <code>{escape(last.get('command') or '')}</code></p>")
        parts.append(f"<p>Ray cluster: {last.get('nodes', '?')} node(s), resources "
                     f"<code>{escape(json.dumps({k: v for k, v in last.get('resources', {}).items() if not k.startswith('node:')}))}</code></p>")
        parts.append(f"<p>Versions: <code>{escape(json.dumps(last.get('versions', {})))}</code></p>")
    return "".join(parts)


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, float_format=lambda v: f"{v:.3f}", na_rep="")
