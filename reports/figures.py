"""Plotly figures for a study report, all drawn from one `studies.analysis.Analysis`.

The comparison figure beside the bars is chosen by the spec's `figure:` from FIGURES (a new one is a
function registered here); the others (bars, learning curves, tuning, parallel coordinates, noise
schedules) suit every study. Every axis has a title; colours follow the question factor's levels.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from denoise_core.registry import Registry
from denoise_core.results import Score
from studies.cells import parse_cell
from studies.store import FINISHED, column, factor_column

FIGURES: Registry = Registry("figure")
COLORS = plotly.colors.qualitative.Plotly


def color(spec, level: str) -> str:
    return COLORS[spec.level_index(spec.question_factor(), level) % len(COLORS)]


def summary(a) -> pd.DataFrame:
    """Per cell with confirm runs, in the spec's order: factor levels, mean and interval at the page's
    level over runs, runs, diverged runs, the `also` metrics, parameters and training speed."""
    r, spec = a.results, a.results.spec
    conf = r.confirm_runs()
    diverged = r.diverged_confirms()
    rows = []
    for cell in spec.cell_keys():
        if cell not in a.cells:
            continue
        s, g = a.cells[cell], conf[conf.cell == cell]
        row = {"cell": cell, **parse_cell(cell), "mean": s.mean, "lo": s.lo, "hi": s.hi, "n": s.n,
               "diverged": diverged.get(cell, 0)}
        for extra in (*spec.also, "params", "images_per_s"):
            src = column(Score(extra, a.score.split)) if extra in spec.also else column(Score(extra))
            if src in g:
                row[extra] = g[src].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def _err(s: pd.DataFrame):
    return dict(type="data", symmetric=False, array=(s["hi"] - s["mean"]).fillna(0),
                arrayminus=(s["mean"] - s["lo"]).fillna(0))


def _slice_text(spec, row) -> str:
    others = spec.other_factors()
    return ", ".join(f"{f}={row[f]}" for f in others) if others else spec.question_factor()


def bars(a) -> go.Figure:
    """Bars per cell with their interval over runs: one colour per level of the question factor, grouped
    along x by the other factors; the best classical baseline and the noisy input as reference marks."""
    spec, s = a.results.spec, summary(a)
    q = spec.question_factor()
    s = s.assign(x=[_slice_text(spec, row) for _, row in s.iterrows()])
    fig = go.Figure()
    for level, g in s.groupby(q, sort=False):
        fig.add_bar(x=g["x"], y=g["mean"], error_y=_err(g), name=f"{q}={level}", marker_color=color(spec, level),
                    hovertemplate=f"{q}={level}, %{{x}}: %{{y:.3g}}<extra></extra>")
    refs = [(sl, sl.baseline) for sl in a.slices if sl.baseline]
    if refs:
        x = [sl.label or q for sl, _ in refs]
        fig.add_scatter(x=x, y=[b.mean for _, b in refs], mode="markers", name="best classical baseline",
                        marker=dict(symbol="line-ew-open", size=40, color="black", line=dict(width=3, color="black")),
                        text=[b.name for _, b in refs], hovertemplate="%{text}: %{y:.3g}<extra></extra>")
        if all(b.input_mean is not None for _, b in refs):
            fig.add_scatter(x=x, y=[b.input_mean for _, b in refs], mode="markers", name="noisy input",
                            marker=dict(symbol="line-ew-open", size=40, color="#999", line=dict(width=2, color="#999")),
                            hovertemplate="noisy input: %{y:.3g}<extra></extra>")
    log = bool((s["mean"] > 0).all() and s["mean"].max() > 20 * s["mean"].min())
    fig.update_layout(barmode="group", title=f"test {spec.metric} per cell: mean over confirm runs, "
                                             f"{a.confidence:.1%} interval over runs",
                      yaxis_title=f"{a.score.split} {spec.metric} ({a.unit})" + (", log scale" if log else ""),
                      yaxis_type="log" if log else "linear", xaxis_title=", ".join(spec.other_factors()) or q,
                      xaxis_type="category", legend_title_text="")
    return fig


@FIGURES.register("bars")
def _bars_only(a) -> list[go.Figure]:
    return []  # the bars are always drawn


def _is_excluded(spec, factor: str, level: str) -> bool:
    return any(cell[factor] == level for cell in spec.all_cells() if spec.excluded(cell))


def _absent(spec, levels: dict) -> tuple[str, str]:
    """What a heatmap tile without a mean says, on the tile and on hover: the cell was excluded, and why; or it has
    no finished run."""
    cell = {f: str(levels[f]) for f in spec.compare if f in levels}
    if len(cell) == len(spec.compare) and spec.excluded(cell):
        return "excluded", f"excluded ({spec.why_excluded(cell)})"
    return "no finished run", "no finished run"


@FIGURES.register("heatmap")
def heatmap(a) -> list[go.Figure]:
    """Mean of each cell, the question factor along x, another factor down y: one heatmap per combination of any
    further factors, so no factor is ever averaged over."""
    spec, s = a.results.spec, summary(a)
    q = spec.question_factor()
    others = spec.other_factors()
    if not others or s.empty:
        return []
    rows, facets = others[0], others[1:]
    groups = s.groupby(facets, sort=False) if facets else [((), s)]
    figs = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        where = ", ".join(f"{f}={v}" for f, v in zip(facets, key))
        m = part.pivot_table(index=rows, columns=q, values="mean", sort=False)  # one cell per (rows, q): no averaging
        m = m.reindex(index=[v for v in spec.labels(rows) if v in m.index],
                      columns=[v for v in spec.labels(q) if v in m.columns or _is_excluded(spec, q, v)])
        tiles = [[(f"{v:.3g} {a.unit}",) * 2 if v == v else _absent(spec, {rows: r, q: c, **dict(zip(facets, key))})
                  for c, v in zip(m.columns, vals)] for r, vals in zip(m.index, m.values)]
        text = [[tile for tile, _ in row] for row in tiles]  # on the tile: the number, or "excluded"
        why = [[hover for _, hover in row] for row in tiles]  # on hover: the number, or why
        fig = go.Figure(go.Heatmap(z=m.values, x=list(m.columns), y=list(m.index), text=text, customdata=why,
                                   texttemplate="%{text}", textfont={"size": 12}, colorscale="Viridis",
                                   colorbar_title=a.unit,
                                   hovertemplate=f"{rows}=%{{y}}, {q}=%{{x}}: %{{customdata}}<extra></extra>"))
        fig.update_layout(title=f"mean {a.score.split} {spec.metric} ({a.unit}): {rows} x {q}" + (f", {where}" if where else ""),
                          xaxis_title=q, yaxis_title=rows, yaxis_autorange="reversed", height=160 + 60 * len(m.index),
                          xaxis_type="category", yaxis_type="category")  # levels are names, even "50"
        figs.append(fig)
    return figs


@FIGURES.register("gap")
def gap(a) -> list[go.Figure]:
    """The difference between the question factor's last and first level per slice, with its interval."""
    spec = a.results.spec
    q = spec.question_factor()
    first, last = spec.labels(q)[0], spec.labels(q)[-1]
    rows = []
    for sl in a.slices:
        c = a.family.find(q, last, first, sl.where)
        if c is not None:
            rows.append((sl.label or q, c))
    if not rows:
        return []
    fig = go.Figure(go.Bar(x=[r for r, _ in rows], y=[c.gain for _, c in rows], marker_color="#c0504d",
                           error_y=dict(type="data", symmetric=False, array=[c.hi - c.gain for _, c in rows],
                                        arrayminus=[c.gain - c.lo for _, c in rows])))
    fig.add_hline(y=0, line_color="#444")
    level = "its look's level" if len(a.looks) > 1 else f"{a.confidence:.1%}"
    fig.update_layout(xaxis_type="category", title=f"{q}={last} minus {q}={first}, with its interval at {level}",
                      yaxis_title=f"difference in {a.score.split} {spec.metric} ({a.unit})",
                      xaxis_title=", ".join(spec.other_factors()) or q)
    return [fig]


@FIGURES.register("levels")
def levels(a) -> list[go.Figure]:
    """Train level x test level: a heatmap and one curve per training level, at the task's extra evaluation levels
    (`Task.level_metrics`: its labels, levels and metrics; nothing here names or parses a metric)."""
    from denoise_core.tasks import get_task

    spec, conf = a.results.spec, a.results.confirm_runs()
    hook = get_task(spec.task).level_metrics
    found: dict[str, tuple[float, str]] = {}
    for cfg in (a.configs.values() if hook else ()):
        for label, level, metric in hook(cfg):
            found.setdefault(label, (level, metric))
    at = sorted(found, key=lambda label: found[label][0])
    cols = [column(Score(found[label][1], a.score.split)) for label in at]
    at, cols = [x for x, c in zip(at, cols) if c in conf], [c for c in cols if c in conf]
    if not cols:
        return []
    q, unit = factor_column(spec.question_factor()), get_task(spec.task).unit(found[at[0]][1])
    mean = conf.groupby(q, sort=False)[cols].mean()
    heat = go.Figure(go.Heatmap(z=mean.values, x=at, y=list(mean.index), texttemplate="%{z:.3g}",
                                colorscale="Viridis", colorbar_title=unit))
    heat.update_layout(title=f"{a.score.split} PSNR ({unit}): trained at (rows) x tested at (columns)",
                       xaxis_title="test level", yaxis_title="training level", xaxis_type="category",
                       yaxis_type="category")
    curves = go.Figure()
    for train, row in mean.iterrows():
        curves.add_scatter(x=at, y=row.values, mode="lines+markers", name=str(train), line_color=color(spec, str(train)))
    curves.update_layout(title=f"{a.score.split} PSNR against the test level, one line per training level",
                         xaxis_title="test level", yaxis_title=f"PSNR ({unit})", legend_title_text="trained at")
    return [heat, curves]


@FIGURES.register("pareto")
def pareto(a) -> list[go.Figure]:
    """Quality against parameters, marker size by training images/s, the Pareto front dashed."""
    spec = a.results.spec
    s = summary(a)
    if "params" not in s:
        return []
    s = s.dropna(subset=["params"]).sort_values("params")
    front, best = [], -np.inf
    for _, r in s.iterrows():
        if spec.sign * r["mean"] > best:
            front.append(r)
            best = spec.sign * r["mean"]
    ips = s["images_per_s"] if "images_per_s" in s else pd.Series(np.ones(len(s)), index=s.index)
    q = spec.question_factor()
    fig = go.Figure()
    fig.add_scatter(x=s["params"], y=s["mean"], mode="markers+text", text=s[q], textposition="top center",
                    marker=dict(size=12 + 30 * (ips / ips.max())), error_y=_err(s), name=q, customdata=ips,
                    hovertemplate="%{text}: %{y:.3g}, %{x} parameters, %{customdata:.0f} images/s<extra></extra>")
    if front:
        f = pd.DataFrame(front)
        fig.add_scatter(x=f["params"], y=f["mean"], mode="lines", line=dict(dash="dash"), name="Pareto front")
    fig.update_layout(title=f"{a.score.split} {spec.metric} ({a.unit}) against parameters (marker size: training images/s)",
                      xaxis_type="log", xaxis_title="parameters (log scale)", yaxis_title=f"{spec.metric} ({a.unit})")
    return [fig]


def _facets(n: int, cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return -(-n // cols), cols


def learning_curves(a) -> go.Figure | None:
    """One panel per slice, one line per level of the question factor: the mean validation metric of its
    confirm runs at each step, with a band from the lowest to the highest run. A zero-shot cell trains nothing (each
    image gets a fit of its own): its one validation score is a dashed level across the panel, not a curve."""
    spec = a.results.spec
    q, others = spec.question_factor(), spec.other_factors()
    curves, flat = _curve_points(a)
    if not curves:  # nothing was trained: no curve to draw
        return None
    panels = sorted(set(curves) | set(flat), key=lambda p: [spec.level_index(f, v) for f, v in zip(others, p)])
    rows, cols = _facets(len(panels))
    titles = [", ".join(f"{f}={v}" for f, v in zip(others, p)) or spec.metric for p in panels]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True, vertical_spacing=min(0.12, 0.6 / rows))
    for i, panel in enumerate(panels):
        at = dict(row=i // cols + 1, col=i % cols + 1)
        for level in spec.labels(q):
            by_step = curves.get(panel, {}).get(level)
            if not by_step:
                continue
            steps = sorted(by_step)
            mean = [float(np.mean(by_step[s])) for s in steps]
            lo, hi = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
            c = color(spec, level)
            fig.add_scatter(x=steps + steps[::-1], y=hi + lo[::-1], fill="toself", line=dict(width=0),
                            fillcolor=c, opacity=0.2, hoverinfo="skip", showlegend=False, **at)
            fig.add_scatter(x=steps, y=mean, mode="lines+markers", line=dict(color=c), name=f"{q}={level}",
                            legendgroup=level, showlegend=i == 0, **at)
        span = [0, max((s for by_step in curves.get(panel, {}).values() for s in by_step), default=1)]
        for level, values in sorted(flat.get(panel, {}).items(), key=lambda kv: spec.level_index(q, kv[0])):
            fig.add_scatter(x=span, y=[float(np.mean(values))] * 2, mode="lines", name=f"{q}={level} (fitted per image)",
                            line=dict(color=color(spec, level), dash="dash"), legendgroup=level, showlegend=i == 0, **at)
    fig.update_xaxes(title_text="training step", row=rows)
    fig.update_yaxes(title_text=f"val {spec.metric} ({a.unit})", col=1)
    fig.update_layout(title=f"validation {spec.metric} during training: mean of the confirm runs, band lowest to highest",
                      height=280 * rows + 100)
    return fig


def _curve_points(a) -> tuple[dict, dict]:
    """({panel: {level: {step: [confirm runs' values]}}}, {panel: {level: [values]}} of the zero-shot cells)."""
    spec = a.results.spec
    q, others = spec.question_factor(), spec.other_factors()
    curves: dict[tuple, dict[str, dict[int, list[float]]]] = {}
    flat: dict[tuple, dict[str, list[float]]] = {}
    for r in a.results.records:
        if r.phase != "confirm" or not r.history:
            continue
        panel, level = tuple(str(r.factors.get(f)) for f in others), str(r.factors.get(q))
        values = [(step, v) for step, v in r.curve(spec.metric) if v == v]
        if r.cell in a.zero_shot_cells:
            flat.setdefault(panel, {}).setdefault(level, []).extend(v for _, v in values)
            continue
        by_step = curves.setdefault(panel, {}).setdefault(level, {})
        for step, v in values:
            by_step.setdefault(step, []).append(v)
    return curves, flat


def tuning(a) -> list[go.Figure]:
    """Every finished tuning trial: one figure per tuned parameter, one panel per slice, colour by the question
    factor's level, the trial's last validation metric against its value. A running trial's interim value
    is not a result: it is left out until the trial finishes."""
    spec, t = a.results.spec, a.results.table
    col = column(Score(spec.metric))
    params = [c for c in t.columns if c.startswith("param.")] if not t.empty else []
    t = t[(t.phase == "tune") & t.status.isin(FINISHED) & t[col].notna()] if col in t else t.iloc[0:0]
    if t.empty or not params:
        return []
    q, others = spec.question_factor(), spec.other_factors()
    slices = sorted({tuple(str(v) for v in r) for r in t[[factor_column(o) for o in others]].itertuples(index=False)},
                    key=lambda p: [spec.level_index(f, v) for f, v in zip(others, p)]) if others else [()]
    figs = []
    for p in params:
        rows, cols = _facets(len(slices))
        fig = make_subplots(rows=rows, cols=cols, shared_yaxes=False,
                            subplot_titles=[", ".join(f"{f}={v}" for f, v in zip(others, s)) or "all cells" for s in slices])
        numeric = pd.to_numeric(t[p], errors="coerce")
        for i, sl in enumerate(slices):
            g = t
            for f, v in zip(others, sl):
                g = g[g[factor_column(f)].astype(str) == v]
            for level in spec.labels(q):
                h = g[g[factor_column(q)].astype(str) == level]
                if h.empty:
                    continue
                x = pd.to_numeric(h[p], errors="coerce")
                fig.add_scatter(x=x if x.notna().all() else h[p].astype(str), y=h[col], mode="markers",
                                marker=dict(color=color(spec, level), size=9), name=f"{q}={level}", legendgroup=level,
                                showlegend=i == 0, row=i // cols + 1, col=i % cols + 1)
        if numeric.notna().all() and numeric.min() > 0 and numeric.max() > 10 * numeric.min():
            fig.update_xaxes(type="log")
        name = p.removeprefix("param.")
        fig.update_xaxes(title_text=name + (" (log scale)" if fig.layout.xaxis.type == "log" else ""), row=rows)
        fig.update_yaxes(title_text=f"val {spec.metric} ({a.unit})", col=1)
        if spec.mode == "min" and (t[col] > 0).all() and t[col].max() > 20 * t[col].min():
            fig.update_yaxes(type="log")
        fig.update_layout(title=f"tuning: each finished trial's {name} against its last validation {spec.metric} "
                                f"(stopped trials at their stop)",
                          height=260 * rows + 100)
        figs.append(fig)
    return figs


def importances(studies: list, min_trials: int = 8) -> go.Figure | None:
    """Optuna's parameter importances, averaged over the cells, only where they can mean something: two or
    more tuned parameters and at least `min_trials` completed trials in every cell counted."""
    import optuna

    per_cell = []
    for study in studies:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(done) >= min_trials and len(done[0].params) >= 2:
            per_cell.append(optuna.importance.get_param_importances(study))
    if not per_cell:
        return None
    names = sorted({k for imp in per_cell for k in imp})
    mean = [float(np.mean([imp.get(k, 0.0) for imp in per_cell])) for k in names]
    fig = go.Figure(go.Bar(x=names, y=mean))
    fig.update_layout(title=f"parameter importance (fANOVA), mean over {len(per_cell)} cells", xaxis_title="parameter",
                      yaxis_title="importance", height=320)
    return fig


def parallel(a) -> go.Figure | None:
    spec, t = a.results.spec, a.results.table
    col = column(Score(spec.metric))
    t = t[t[col].notna()] if col in t else t.iloc[0:0]
    if t.empty:
        return None
    dims = [dict(label=c.removeprefix("param."), values=pd.to_numeric(t[c], errors="coerce").fillna(0))
            for c in t.columns if c.startswith("param.")]
    for f in spec.compare:
        order = [v for v in spec.labels(f) if v in set(t[factor_column(f)].astype(str))]
        codes = t[factor_column(f)].astype(str).map({v: i for i, v in enumerate(order)})
        dims.append(dict(label=f, values=codes, tickvals=list(range(len(order))), ticktext=order))
    dims.append(dict(label=f"val {spec.metric}", values=t[col]))
    fig = go.Figure(go.Parcoords(line=dict(color=t[col], colorscale="Viridis", showscale=True), dimensions=dims))
    fig.update_layout(title=f"every trial: tuned parameters, factors and final validation {spec.metric}")
    return fig


def at_once(t: pd.DataFrame) -> pd.DataFrame:
    """Trials running at each moment a trial started or ended: columns time (s from the first start) and running."""
    spans = t.dropna(subset=["start", "end"]) if {"start", "end"} <= set(t.columns) else t.iloc[:0]
    if spans.empty:
        return pd.DataFrame({"time": [], "running": []})
    events = pd.concat([pd.DataFrame({"time": spans.start, "d": 1}), pd.DataFrame({"time": spans.end, "d": -1})])
    events = events.sort_values(["time", "d"]).groupby("time", sort=True).d.sum().cumsum()  # ends before starts
    return pd.DataFrame({"time": events.index - spans.start.min(), "running": events.values})


def slots(run, t: pd.DataFrame) -> int | None:
    """How many trials the cluster of a run held at once: its GPUs (or CPUs) over a trial's share."""
    if run is None or t.empty:
        return None
    gpus, cpus = float(t.gpus.max() or 0), float(t.cpus.max() or 1)
    have = run.resources.get("GPU" if gpus else "CPU", 0)
    return int(have // (gpus or cpus)) if have else None


def concurrency(a) -> go.Figure | None:
    """Trials running at once over the study's time, against the slots of the cluster of its last run."""
    r = a.results
    c = at_once(r.table)
    if c.empty:
        return None
    fig = go.Figure(go.Scatter(x=c.time / 60, y=c.running, mode="lines", line_shape="hv", name="trials running"))
    if (n := slots(r.info.last_run, r.table)) is not None:
        fig.add_hline(y=n, line_dash="dot", annotation_text=f"the cluster's slots ({n})")
    fig.update_layout(title="Trials running at once", height=300,
                      xaxis_title="minutes since the first trial started (idle time between runs included)",
                      yaxis_title="trials running")
    return fig
