"""Plotly figures for a study report: the comparison suited to the study, curves, tuning."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.stats import cell_stat, confirm_values, diverged_confirms, question_factor, score_column
from studies.spec import cell_key


def summary(table: pd.DataFrame, spec) -> pd.DataFrame:
    """Per cell: factor levels, mean and 95% CI of the confirm runs' final metric."""
    conf = confirm_values(table, spec.metric)
    diverged = diverged_confirms(table)
    col = score_column(conf, spec.metric)
    test = col.startswith("final.test_")
    rows = []
    for cell, g in conf.groupby("cell", sort=False):
        s = cell_stat(cell, g[col])
        row = {"cell": cell, "mean": s.mean, "lo": s.lo, "hi": s.hi, "n": s.n, "diverged": diverged.get(cell, 0)}
        row.update({f: g[f"factor.{f}"].iloc[0] for f in spec.compare})
        for extra in ("params", "images_per_s", *spec.also):  # `also` metrics on the same split as the score
            src = f"final.test_{extra}" if test and f"final.test_{extra}" in g else f"final.{extra}"
            if src in g:
                row[f"final.{extra}"] = g[src].mean()
        rows.append(row)
    order = {cell_key(c): i for i, c in enumerate(spec.cells())}  # the spec's order, not finishing order
    return pd.DataFrame(rows).sort_values("cell", key=lambda c: c.map(order)).reset_index(drop=True) if rows \
        else pd.DataFrame(rows)


def _err(s: pd.DataFrame):
    return dict(type="data", symmetric=False, array=(s["hi"] - s["mean"]).fillna(0), arrayminus=(s["mean"] - s["lo"]).fillna(0))


def bars(s: pd.DataFrame, spec, unit: str) -> go.Figure:
    """Bars per cell with 95% CI error bars: one colour per level of the question factor, grouped
    along x by the other factors' levels. A log axis when the means span more than 20x."""
    factors = list(spec.compare)
    q = question_factor(spec)
    others = [f for f in factors if f != q]
    fig = go.Figure()
    for level, g in s.groupby(q, sort=False):
        x = g[others].astype(str).apply(lambda r: ",".join(f"{f}={v}" for f, v in r.items()), axis=1) \
            if others else g[q].astype(str)
        fig.add_bar(x=x, y=g["mean"], error_y=_err(g), name=f"{q}={level}",
                    hovertemplate=f"{q}={level}, %{{x}}: %{{y:.3f}}<extra></extra>")
    log = bool((s["mean"] > 0).all() and s["mean"].max() > 20 * s["mean"].min())
    fig.update_layout(barmode="group", title=f"{spec.metric} per cell (mean of confirm seeds, 95% CI)",
                      yaxis_title=f"{spec.metric} ({unit})" + (", log scale" if log else ""),
                      yaxis_type="log" if log else "linear", xaxis_title=",".join(others) or q)
    return fig


def heatmap(s: pd.DataFrame, spec, rows: str, cols: str, unit: str) -> go.Figure:
    m = s.pivot_table(index=rows, columns=cols, values="mean", sort=False)
    lo = s.pivot_table(index=rows, columns=cols, values="lo", sort=False).reindex_like(m)
    hi = s.pivot_table(index=rows, columns=cols, values="hi", sort=False).reindex_like(m)
    text = [[f"{m.iat[i, j]:.2f}" for j in range(m.shape[1])] for i in range(m.shape[0])]
    ci = np.dstack([lo.values, hi.values])
    fig = go.Figure(go.Heatmap(z=m.values, x=[str(c) for c in m.columns], y=[str(r) for r in m.index], text=text,
                               texttemplate="%{text}", customdata=ci, colorscale="Viridis",
                               hovertemplate=f"{rows}=%{{y}}, {cols}=%{{x}}<br>mean %{{z:.2f}} {unit}"
                                             "<br>95% CI %{customdata[0]:.2f} to %{customdata[1]:.2f}<extra></extra>"))
    fig.update_layout(title=f"mean {spec.metric} ({unit}): {rows} x {cols}", xaxis_title=cols, yaxis_title=rows,
                      yaxis_autorange="reversed")  # rows top to bottom in the spec's order
    return fig


def gap(s: pd.DataFrame, factor: str, target: str, a: str, b: str, unit: str) -> go.Figure:
    """The a - b gap per level of `factor` (e.g. noisy - clean targets per noise)."""
    p = s.pivot_table(index=factor, columns=target, values="mean", sort=False)
    fig = go.Figure(go.Bar(x=list(p.index), y=p[a] - p[b], marker_color="#c0504d"))
    fig.update_layout(title=f"gap {target}={a} minus {target}={b} per {factor} ({unit})", yaxis_title=unit)
    return fig


def level_grid(table: pd.DataFrame, spec, unit: str) -> list[go.Figure]:
    """noise_level: train level x test level heatmap and PSNR-vs-test-level curves."""
    conf = confirm_values(table, spec.metric)
    prefix = "final.test_psnr_" if score_column(conf, spec.metric).startswith("final.test_") else "final.psnr_"
    cols = sorted((c for c in conf.columns if c.startswith(prefix) and c[len(prefix):][:1].isalpha()
                   and not c.endswith("levels_mean")), key=lambda c: float("".join(ch for ch in c if ch.isdigit() or ch == ".") or 0))
    if not cols:
        return []
    factor = f"factor.{list(spec.compare)[0]}"
    mean = conf.groupby(factor, sort=False)[cols].mean()
    tests = [c.removeprefix(prefix) for c in cols]
    heat = go.Figure(go.Heatmap(z=mean.values, x=tests, y=list(mean.index), texttemplate="%{z:.2f}", colorscale="Viridis"))
    heat.update_layout(title=f"PSNR ({unit}): trained at (rows) x tested at (columns)", xaxis_title="test level",
                       yaxis_title="train level")
    curves = go.Figure()
    for train, row in mean.iterrows():
        curves.add_scatter(x=tests, y=row.values, mode="lines+markers", name=str(train))
    curves.update_layout(title="PSNR vs test level", xaxis_title="test level", yaxis_title=f"PSNR ({unit})")
    return [heat, curves]


def pareto(s: pd.DataFrame, spec, unit: str) -> go.Figure:
    """architectures: quality vs parameters, marker size by images/s, Pareto front marked."""
    s = s.dropna(subset=["final.params"]).sort_values("final.params")
    front, best = [], -np.inf
    for _, r in s.iterrows():
        if r["mean"] > best:
            front.append(r)
            best = r["mean"]
    ips = s.get("final.images_per_s", pd.Series(np.ones(len(s)), index=s.index))
    size = 12 + 30 * (ips / ips.max()) if len(s) else []
    fig = go.Figure()
    fig.add_scatter(x=s["final.params"], y=s["mean"], mode="markers+text", text=s[list(spec.compare)[0]],
                    textposition="top center", marker=dict(size=size), error_y=_err(s), name="models",
                    customdata=ips, hovertemplate="%{text}: %{y:.2f}, %{x} params, %{customdata:.0f} img/s<extra></extra>")
    if front:
        f = pd.DataFrame(front)
        fig.add_scatter(x=f["final.params"], y=f["mean"], mode="lines", line=dict(dash="dash"), name="Pareto front")
    fig.update_layout(title=f"{spec.metric} ({unit}) vs parameters (marker size: training images/s)",
                      xaxis_type="log", xaxis_title="parameters", yaxis_title=f"{spec.metric} ({unit})")
    return fig


def learning_curves(records: list[dict], spec) -> go.Figure | None:
    """Small multiples: one panel per slice of the other factors, one line per level of the question
    factor: the mean validation metric over its confirm seeds at each step, with a min-max band."""
    q = question_factor(spec)
    others = [f for f in spec.compare if f != q]
    curves: dict[tuple, dict[str, dict[int, list[float]]]] = {}
    for r in records:
        if r["phase"] != "confirm" or not r["history"]:
            continue
        panel = tuple(str(r["factors"].get(f)) for f in others)
        by_step = curves.setdefault(panel, {}).setdefault(str(r["factors"].get(q)), {})
        for h in r["history"]:
            if spec.metric in h and h[spec.metric] == h[spec.metric]:  # not NaN
                by_step.setdefault(int(h["step"]), []).append(h[spec.metric])
    if not curves:
        return None
    panels = sorted(curves, key=lambda p: [_order(spec, f, v) for f, v in zip(others, p)])
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    titles = [", ".join(f"{f}={v}" for f, v in zip(others, p)) or spec.metric for p in panels]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True)
    colors = plotly.colors.qualitative.Plotly
    levels = [lab for lab, _ in spec.factor_levels(q)]
    for i, panel in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        for j, level in enumerate(levels):
            by_step = curves[panel].get(level)
            if not by_step:
                continue
            steps = sorted(by_step)
            mean = [float(np.mean(by_step[s])) for s in steps]
            lo, hi = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
            color = colors[j % len(colors)]
            fig.add_scatter(x=steps + steps[::-1], y=hi + lo[::-1], fill="toself", line=dict(width=0),
                            fillcolor=color, opacity=0.2, hoverinfo="skip", showlegend=False, row=row, col=col)
            fig.add_scatter(x=steps, y=mean, mode="lines+markers", line=dict(color=color), name=f"{q}={level}",
                            legendgroup=level, showlegend=i == 0, row=row, col=col)
    fig.update_layout(title=f"validation {spec.metric} during training: mean of the confirm seeds, band min to max",
                      height=260 * rows + 80)
    return fig


def _order(spec, factor: str, level: str) -> int:
    labels = [lab for lab, _ in spec.factor_levels(factor)]
    return labels.index(level) if level in labels else len(labels)


def tuning_view(table: pd.DataFrame, spec) -> go.Figure | None:
    """Every tuning trial: each tuned parameter's value against the validation metric, coloured by cell."""
    col = f"final.{spec.metric}"
    params = [c for c in table.columns if c.startswith("param.")]
    t = table[(table.phase == "tune") & table[col].notna()] if col in table and not table.empty else table.iloc[0:0]
    if t.empty or not params:
        return None
    fig = make_subplots(rows=1, cols=len(params), subplot_titles=[p.removeprefix("param.") for p in params],
                        shared_yaxes=True)
    colors = plotly.colors.qualitative.Dark24
    for i, cell in enumerate(sorted(t.cell.unique(), key=lambda c: [_order(spec, f, v) for f, v in
                                                                     (kv.split("=", 1) for kv in c.split(","))])):
        g = t[t.cell == cell]
        for k, p in enumerate(params):
            x = pd.to_numeric(g[p], errors="coerce")
            fig.add_scatter(x=x if x.notna().all() else g[p].astype(str), y=g[col], mode="markers", name=cell,
                            legendgroup=cell, showlegend=k == 0, marker=dict(color=colors[i % len(colors)], size=9),
                            row=1, col=k + 1)
    for k, p in enumerate(params):
        numeric = pd.to_numeric(t[p], errors="coerce")
        if numeric.notna().all() and numeric.min() > 0 and numeric.max() > 10 * numeric.min():
            fig.update_xaxes(type="log", row=1, col=k + 1)
    fig.update_layout(title=f"tuning: each trial's tuned values against its validation {spec.metric} (colour: cell)",
                      yaxis_title=spec.metric, height=420)
    return fig


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
    fig.update_layout(title=f"parameter importance (fANOVA), mean over {len(per_cell)} cells", yaxis_title="importance",
                      height=320)
    return fig


def parallel(table: pd.DataFrame, spec) -> go.Figure | None:
    col = f"final.{spec.metric}"
    params = [c for c in table.columns if c.startswith("param.")]
    t = table[table[col].notna()] if col in table else table.iloc[0:0]
    if t.empty:
        return None
    dims = [dict(label=c.removeprefix("param."), values=pd.to_numeric(t[c], errors="coerce").fillna(0)) for c in params]
    for f in spec.compare:
        codes, levels = pd.factorize(t[f"factor.{f}"])
        dims.append(dict(label=f, values=codes, tickvals=list(range(len(levels))), ticktext=[str(x) for x in levels]))
    dims.append(dict(label=spec.metric, values=t[col]))
    fig = go.Figure(go.Parcoords(line=dict(color=t[col], colorscale="Viridis", showscale=True), dimensions=dims))
    fig.update_layout(title="all trials: parameters, factors and final metric")
    return fig


def schedules_compared(spec) -> tuple[list[str], list[int]] | None:
    """(schedule names, timestep counts) when the study's cells train under noise schedules, else None."""
    budget = next(iter(spec.budgets))
    cfgs = [spec.cell_config(c, budget) for c in spec.cells()]
    names = sorted({c["schedule"] for c in cfgs if "schedule" in c})
    if not names:
        return None
    return names, sorted({int(c.get("timesteps", 1000)) for c in cfgs})


def schedule_curves(names: list[str], timesteps: list[int]) -> go.Figure:
    """ddpm_schedule: alpha-bar and log-SNR of each schedule over normalised time."""
    import torch

    from denoise_core.diffusion import build_schedule

    fig = make_subplots(rows=1, cols=2, subplot_titles=("alpha-bar", "log SNR"))
    colors = plotly.colors.qualitative.Plotly
    for i, (name, T) in enumerate((n, t) for n in names for t in timesteps):
        ab = torch.cumprod(1 - build_schedule(name, T), 0).numpy()
        x = np.arange(1, T + 1) / T
        line = dict(color=colors[i % len(colors)], dash="solid" if T == max(timesteps) else "dot")
        fig.add_scatter(x=x, y=ab, name=f"{name} T={T}", legendgroup=f"{name}{T}", line=line, row=1, col=1)
        fig.add_scatter(x=x, y=np.log(ab / (1 - ab)), name=f"{name} T={T}", legendgroup=f"{name}{T}", line=line,
                        showlegend=False, row=1, col=2)
    fig.update_layout(title="noise schedules", xaxis_title="t / T", xaxis2_title="t / T", height=380)
    return fig
