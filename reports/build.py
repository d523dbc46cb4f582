"""One self-contained HTML report per study, built from its stored results (no running Ray needed).

    build_report(sdir)   # -> <sdir>/report.html

The page reads one `StudyResults` (loaded once) through one `Analysis` (one family of corrected
comparisons at one confidence level): the verdicts, the answer, every comparison, the error bars and
the image panel all state the same numbers. Sections: how the findings were made; the literature's
claims; the answer per slice; every comparison; figures and the per-cell table; the image panel;
learning curves; tuning; best configurations; how it ran.
"""
from __future__ import annotations

import json
import math
import time
from html import escape
from pathlib import Path

import pandas as pd

from denoise_core.results import Score, ShownImages
from denoise_core.tasks import ReportView, get_task
from reports import figures as F
from studies.analysis import BASELINE_NAMES, TOO_FEW, Analysis, analyse, baseline_label, margin_of, planned_looks
from reports.html import Figures, fixed2, page, png, sig3, table
from studies.stats import ALPHA, MIN_DF, MIN_RUNS_FOR_SPREAD, POWER
from studies.runlog import run_span
from studies.cells import cell_label, in_slice, parse_cell
from studies.store import DIVERGED, FAILED, FINISHED, StudyResults, read_looks, study_failure, write_atomic


def build_report(sdir: Path) -> Path:
    """Write <study>/report.html from the stored results; returns its path."""
    results = StudyResults.load(Path(sdir))
    a = analyse(results)
    figs = Figures()
    sections = [_header(a), _method(a), _protocol(a), _references(a), _verdicts(a), _answer(a), _comparisons(a),
                _figures(a, figs), _images(a),
                _curves(a, figs), _tuning(a, figs), _best_table(a), _how_it_ran(a, figs)]
    html = page(f"{results.spec.name} report", "\n".join(s for s in sections if s), figs.n,
                time.strftime("%Y-%m-%d %H:%M:%S"))
    return write_atomic(results.sdir / "report.html", html)


def _baseline_of(a: Analysis, c) -> str:
    """The name of the baseline a comparison is against, as its slice's answer names it."""
    b = next((sl.baseline for sl in a.slices if sl.baseline and sl.baseline.comparison is c), None)
    return b.label if b else BASELINE_NAMES.get(c.b, c.b)


def _ci(a: Analysis, c) -> str:
    if not c.estimable:
        return f"no interval: {_why_too_few(c)}"
    if c.lo != c.lo:
        return "too few runs for an interval"
    return f"{c.confidence:.1%} CI {c.lo:+.2f} to {c.hi:+.2f}" + (f", look at {c.look} runs a cell" if c.look else "")


def _why_too_few(c) -> str:
    """What a comparison without an interval had: its runs a side and its degrees of freedom against MIN_DF."""
    df = f"{c.df:.1f} degrees of freedom" if math.isfinite(c.df) else "no spread to estimate"
    return f"{c.n_runs[0]} vs {c.n_runs[1]} runs, {df}; an interval needs {MIN_DF}"


def _header(a: Analysis) -> str:
    r = a.results
    parts = [f"<h1>{escape(r.spec.name)}</h1>", f"<p>{escape(r.spec.description)}</p>"]
    t = r.table
    finished = int(t.status.isin(FINISHED).sum()) if not t.empty else 0
    running_now = r.info.last_run is not None and run_span(r.info.last_run)[1] == "running"
    if finished < r.info.planned or running_now:
        unfinished = int((~t.status.isin(FINISHED)).sum()) if not t.empty else 0
        now = (f"{unfinished} running" if running_now else
               f"{unfinished} interrupted, and no run is going on: the same command resumes the study")
        parts.append(f'<div class="banner" id="partial"><b>Partial report:</b> {finished} of {r.info.planned} '
                     f'planned trials have finished ({now}). Findings may change.</div>')
    elif why := study_failure(r.sdir):
        parts.append(f'<div class="banner" id="failed"><b>This study failed:</b> {escape(why)}. Only cells with '
                     f'completed confirm runs are compared below.</div>')
    return "".join(parts)


def _method(a: Analysis) -> str:
    """The one statement of how every number below was made, and at which level."""
    spec, fam = a.results.spec, a.family
    if a.score.split == "test":
        scored = _held_out(a)
        tested = [c for c in fam.comparisons if c.n_sources]
        if tested:
            n_img, n_src = max(c.n_images // c.n_slices for c in tested), max(c.n_sources for c in tested)
            scored += (f" The {n_img} test images are crops of {n_src} source images; crops of one image are "
                       f"not independent, so the source image is a level of its own in every comparison and the "
                       f"intervals speak for other images, not only for other crops of these.")
    elif a.results.confirm_runs().empty:
        return ('<div class="method" id="method"><b>How to read this page.</b> No confirm run has completed yet, so '
                'nothing is compared: the findings, intervals and verdicts appear once each cell has one.</div>')
    else:
        scored = f"Scores are the confirm runs' final validation {spec.metric} (this study predates test scores)."
    few = sum(not c.estimable for c in fam.comparisons)
    unsaid = (f" {few} comparison(s) had too few runs or images for an interval (fewer than {MIN_DF} degrees of "
              f"freedom): they are marked so, are no answer either way, and stay out of the family.") if few else ""
    if fam.m == 0:
        return (f'<div class="method" id="method"><b>How to read this page.</b> {escape(scored)} No comparison could '
                f'be made yet: it needs completed confirm runs of at least two cells.{escape(unsaid)}</div>')
    methods = sorted({c.method for c in fam.comparisons})
    family = (f"Every comparison below (each pair of {escape(spec.question_factor())} levels per slice, each slice's best "
              f"cell against its best classical baseline, and each claim) is estimated image by image and run by run "
              f"({escape('; '.join(methods)) or 'none yet'}) and corrected with the others by Benjamini-Hochberg at a "
              f"{ALPHA:.0%} false discovery rate.")
    if len(a.looks) > 1:
        return f'<div class="method" id="method"><b>How to read this page.</b> {escape(scored)} {family} ' \
               f'{_looks_text(a)}{escape(unsaid)} Error bars on cells show the spread over training runs at the last ' \
               f'look\'s {a.confidence:.1%} level, where a cell has {MIN_RUNS_FOR_SPREAD} runs or more.</div>'
    return (f'<div class="method" id="method"><b>How to read this page.</b> {escape(scored)} {family} The family has '
            f"{fam.m} comparisons. <b>Every interval on this page is a "
            f"{a.confidence:.1%} interval</b> (false-coverage-rate adjusted: 1 - {max(fam.discoveries, 1)} x {ALPHA:.0%} / "
            f"{fam.m} for {fam.discoveries} significant of {fam.m}), so a difference is significant exactly when its "
            f"interval excludes zero.{escape(unsaid)} Error bars on cells show the spread over training runs at the same "
            f"level, where a cell has {MIN_RUNS_FOR_SPREAD} runs or more.</div>")


def _waves(r: StudyResults) -> str:
    """The confirm runs the looks added to the first plan, in words ('' where none did)."""
    base, plan = len(r.info.cells) * (r.info.trials_per_cell + r.info.seeds), read_looks(r.sdir)
    waves = sum(bool(c) for c in plan.continuing) if plan else 0
    return f", and {r.info.planned - base} confirm runs more in {waves} wave(s)" if r.info.planned > base else ""


def _looks_text(a: Analysis) -> str:
    """Adaptive confirmation in words: the looks taken, their shares of the error rate, and why that holds."""
    spec = a.results.spec
    looks = planned_looks(a.results)
    taken = "; ".join(f"look {i + 1} at {lk.seeds} runs a cell: {lk.cells} cell(s), {lk.m} comparisons at "
                      f"{lk.alpha:.2%}, intervals at {lk.confidence:.1%}" for i, lk in enumerate(a.looks))
    margin = f", or its interval lies inside \u00b1{spec.margin:g} {a.unit}" if spec.margin else ""
    return (f'<span id="sequential"><b>Confirm runs were added where a comparison was undecided.</b> Each cell got '
            f"{looks[0]} confirm runs, then waves of {looks[0]} more while one of its level comparisons or claims was "
            f"undecided, up to {looks[-1]} ({len(looks)} looks). A comparison is decided when it is significant{margin} "
            f"(a claim: inside \u00b1its margin); the baseline comparisons hold no cell back. Looks taken: {taken}. "
            f"Looking again after each wave would find a difference that is not there more often than {ALPHA:.0%} if "
            f"each look were tested at {ALPHA:.0%}: the looks share it instead (alpha spending over the {len(looks)} "
            f"planned looks, Pocock-type, Lan &amp; DeMets 1983), each look corrected at its share, and each "
            f"comparison keeps the interval of the first look that decided it, else its last look's. Whatever the "
            f"looks decide, the chance of a false discovery over all of them stays within the sum of the shares, "
            f"{ALPHA:.0%} (a union bound; benchmarks/sequential_error.py measures it). <b>Each interval is at its own "
            f"look's level</b> (the table's \u201clevel\u201d column), so a difference is significant exactly when its "
            f"interval excludes zero.</span>")


def _held_out(a: Analysis) -> str:
    """What the test scores are, and whether they are held out: a source named for two splits shares its images."""
    from denoise_core.sources import shared_splits

    shared = list(dict.fromkeys(s for cfg in a.configs.values() for s in shared_splits(cfg.dataset)))
    names = {"train": "training", "val": "validation", "test": "test"}
    text = f"Scores are {a.results.spec.metric} on "
    if not any(b == "test" for _, b, _ in shared):
        text += "held-out test images that no trial trained or tuned on"
    else:
        text += "the test images"
    text += ", with each confirm run's weights from its best validation evaluation."
    for x, y, source in shared:
        text += (f" {names[x].capitalize()} and {names[y]} are the same images ({source})"
                 + ("; test scores are not held out." if y == "test" else "."))
    return text


def _protocol(a: Analysis) -> str:
    """One line: how the test scores were made (the task says), where the study has test scores."""
    task = get_task(a.results.spec.task)
    if task.test_note is None or a.score.split != "test":
        return ""
    notes = list(dict.fromkeys(task.test_note(cfg) for cfg in a.configs.values()))
    return f'<p class="protocol" id="protocol">{escape(" ".join(notes))}</p>'


def _here(a: Analysis, cells: list[tuple[str, str]], ref) -> tuple[str, float] | None:
    """Our number for a published row: the best matching cell's mean test score over its confirm runs, or our
    classical baseline's (`ref.baseline`) on the same test images."""
    from studies.cells import cell_label, parse_cell

    r = a.results
    if ref.baseline:
        for cell, sfx in cells:
            entry = r.baselines.of(cell)
            ours = entry.metrics.get(ref.baseline) if entry else None
            value = ours.test.get(Score(f"{ref.metric}{sfx}").key) if ours else None
            if value is not None:
                return f"our {baseline_label(ref.baseline, entry.channels)}", value
        return None
    conf = r.confirm_runs()
    best = None
    for cell, sfx in cells:
        col = f"final.{Score(f'{ref.metric}{sfx}', 'test').key}"
        if col in conf and (conf.cell == cell).any():
            value = float(conf.loc[conf.cell == cell, col].mean())
            if best is None or value > best[1]:
                best = (cell_label(parse_cell(cell)), value)
    return best


PROTOCOL_TOLERANCE = 0.1  # dB: one draw of noise moves a set's mean PSNR by a few hundredths (benchmarks/README.md)


def _reference_cells(a: Analysis, ref) -> list[tuple[str, str]]:
    """(cell, metric suffix) of every cell whose test set, noise and level are the published row's, within the
    compared levels its `where` names."""
    from denoise_core.data import split_source

    task = get_task(a.results.spec.task)
    if task.test_conditions is None:
        return []
    return [(cell, sfx) for cell, cfg in a.configs.items() for noise, level, sfx in task.test_conditions(cfg)
            if split_source(cfg.dataset, "test")[0] == ref.test_set and (noise, level) == (ref.noise, ref.level)
            and in_slice(parse_cell(cell), ref.where)]


def _references(a: Analysis) -> str:
    """The published rows whose test set, noise, level and metric are this study's, each beside our number."""
    spec = a.results.spec
    task = get_task(spec.task)
    if not spec.references or task.test_conditions is None or a.score.split != "test":
        return ""
    rows, checks = [], []
    for ref in spec.references:
        cells = _reference_cells(a, ref)
        here = _here(a, cells, ref) if cells else None
        if here is None:
            continue
        who, value = here
        unit = "dB" if ref.metric == "psnr" else ""
        rows.append({"published": f"{ref.method} ({ref.source})", "test set": ref.test_set,
                     "noise": f"{ref.noise} {ref.level:g}", "metric": ref.metric, "published value": f"{ref.value:.2f}",
                     "here": who, "value here": f"{value:.2f}", "difference": f"{value - ref.value:+.2f}",
                     "protocol": "same" if ref.protocol == "same" else ref.protocol})
        if ref.baseline:
            gap = abs(round(value, 2) - ref.value)
            verdict = (f"within the {PROTOCOL_TOLERANCE:g} {unit} one draw of noise allows" if gap <= PROTOCOL_TOLERANCE
                       else f"{gap:.2f} {unit} apart, more than the {PROTOCOL_TOLERANCE:g} {unit} one draw of noise "
                            f"explains: the test images or the protocol differ from the source's")
            checks.append(f"published {ref.method} {ref.value:.2f} {unit}, here {value:.2f} {unit}, "
                          f"{'same protocol' if ref.protocol == 'same' else ref.protocol} "
                          f"({ref.test_set}, {ref.noise} {ref.level:g}): {verdict}")
    if not rows:
        return ""
    text = ("Published rows of the same test set, noise, level and metric, beside this study's numbers (a network's "
            "row: the best matching cell's mean over its confirm runs). ")
    if checks:
        text += "The check that the protocol is the same: " + "; ".join(checks) + "."
    return ('<h2 id="references">Published results beside ours</h2>' + f"<p>{escape(text)}</p>"
            + table(pd.DataFrame(rows), "reference-table"))


def _steps(a: Analysis) -> str:
    conf = a.results.confirm_runs()
    return f"{int(conf['final.step'].max()):,}" if not conf.empty and "final.step" in conf else "?"


def _verdicts(a: Analysis) -> str:
    if not a.results.spec.expect:
        return ""
    rows = []
    for v in a.verdicts:
        c, claim = v.comparison, v.claim
        where = ", ".join(f"{k}={x}" for k, x in claim.where.items())
        effect = (f"{c.gain:+.2f} {a.unit} ({_ci(a, c)}{_precision(a, c)})" if c
                  else "no completed confirm runs of both levels")
        rule = (f"same within {claim.within:g} {a.unit}" if claim.relation == "same" else f"{claim.a} better")
        src_steps = f"{claim.source_steps:,}" if claim.source_steps else "not stated"
        rows.append({"claim": claim.claim, "source": claim.source,
                     "compared": f"{claim.a} vs {claim.b}" + (f" ({where})" if where else ""), "claims": rule,
                     "effect here (the first's advantage)": effect,
                     "verdict": v.verdict + (" (borderline)" if c is not None and c.borderline else ""),
                     "training steps": f"{_steps(a)} here ({a.results.info.budget}); {src_steps} in the source"})
    note = ('<p class="muted">Each verdict rests on the row of the same two levels in "Every comparison" below. '
            "\u201ccontradicted\u201d means these runs' interval excludes the claim at this budget's training steps; "
            "where the source trained far longer (the last column), the claim may still hold at the source's budget. "
            f"\u201c{TOO_FEW}\u201d means the comparison had too few runs or images for an interval (fewer than "
            f"{MIN_DF} degrees of freedom): it is no answer either way.</p>")
    return ('<h2 id="verdicts">Verdicts: the literature\'s claims at this budget</h2>'
            + table(pd.DataFrame(rows), "verdict-table", lambda i: f"verdict {a.verdicts[i].verdict.replace(' ', '-')}")
            + note)


def headline(a: Analysis, sl) -> str:
    """The answer in one slice: the best level, every significant difference between levels, the best
    classical baseline and the noisy input."""
    spec, q, u = a.results.spec, a.results.spec.question_factor(), a.unit
    better = "beats" if spec.mode == "max" else "beats (lower is better)"
    prefix = f"With {sl.label}: " if sl.label else ""
    best = sl.winner
    mean = a.cells[spec.key_of({**sl.where, q: best})].mean
    sig = [c for c in sl.comparisons if c.significant]
    ties = [c for c in sl.comparisons if not c.significant and c.estimable]
    unknown = [c for c in sl.comparisons if not c.estimable]
    out = [f"{prefix}{q}={best} scores best ({a.score.split} {spec.metric} {mean:.2f} {u})."]
    edge = lambda c: ", borderline" if c.borderline else ""  # noqa: E731 - as the comparison table marks it
    if sig:
        out.append("Significant: " + "; ".join(f"{q}={c.a} {better} {q}={c.b} by {abs(c.gain):.2f} {u} ({_ci(a, c)}"
                                                 f"{edge(c)})" for c in sig) + ".")
    if ties:
        out.append("Not significant: " + "; ".join(f"{q}={c.a} vs {q}={c.b} ({q}={c.a} {_by(c.gain, u)}, {_ci(a, c)}"
                                                     f"{edge(c)})" for c in ties) + ".")
    if unknown:
        out.append("No answer yet, too few runs or images: " + "; ".join(
            f"{q}={c.a} vs {q}={c.b} ({_why_too_few(c)})" for c in unknown) + ".")
    if sl.baseline:
        b, c = sl.baseline, sl.baseline.comparison
        verdict = "significantly" if c.significant else "not significantly" if c.estimable else "with no answer yet"
        out.append(f"It is {_by(c.gain, u)} the best classical baseline on validation, {b.label} "
                   f"({b.mean:.2f} {u}), {verdict} ({_ci(a, c)})"
                   + (f", and {_by(mean - b.input_mean, u)} the noisy input ({b.input_mean:.2f} {u})."
                      if b.input_mean is not None else "."))
    return " ".join(out)


def _by(gain: float, unit: str) -> str:
    """A difference in words, by its sign: '0.66 dB below', never '-0.66 dB over'."""
    return f"{abs(gain):.2f} {unit} {'above' if gain >= 0 else 'below'}"


def _answer(a: Analysis) -> str:
    if not a.slices:
        return '<h2 id="answer">Answer</h2><p>No confirm run has completed yet, so there is nothing to compare.</p>'
    diverged = [f"{cell_label(parse_cell(cell))} diverged in {k} confirm run(s): it counts against the cell, which is "
                f"never ranked first." for cell, k in a.results.diverged_confirms().items()]
    items = [f'<li class="headline">{escape(headline(a, sl))}{_baseline_table(a, sl, i)}</li>'
             for i, sl in enumerate(a.slices)]
    items += [f'<li class="headline">{escape(s)}</li>' for s in diverged + a.collapses]
    return '<h2 id="answer">Answer</h2><ul>' + "".join(items) + "</ul>"


def _baseline_table(a: Analysis, sl, i: int) -> str:
    """Every classical baseline of the slice's setting on the test images, its parameter chosen on validation, with
    the published row beside ours where a reference matches: the strongest baseline is never hidden."""
    r, spec, metric, u = a.results, a.results.spec, a.score.metric, a.unit
    cell = spec.key_of({**sl.where, spec.question_factor(): sl.winner}) if sl.winner else None
    entry = r.baselines.of(cell) if cell else None
    if entry is None or a.score.split != "test":
        return ""
    scored = {n: m for n, m in entry.metrics.items() if math.isfinite(m.test.get(metric, math.nan))}
    if not scored:
        return ""
    chosen = sl.baseline.name if sl.baseline else None
    real = [n for n in scored if n != "noisy"]
    top = max(real, key=lambda n: spec.sign * scored[n].test[metric]) if real else None
    rows = []
    order = ["noisy"] * ("noisy" in scored) + sorted(real, key=lambda n: -spec.sign * scored[n].test[metric])
    for name in order:  # the input, then best on test first
        m, ref = scored[name], _published_baseline(a, cell, name)
        notes = (["best on validation"] if name == chosen else []) + (["best on test"] if name == top else [])
        rows.append({"classical baseline": baseline_label(name, entry.channels),
                     "parameter (chosen on validation)": "" if m.param is None else str(m.param),
                     f"validation {metric}": fixed2(m.val.get(metric), "not scored (never chosen)"),
                     f"test {metric} ({u})": fixed2(m.test[metric]),
                     "published": f"{ref.value:.2f} ({ref.source})" if ref else "", "note": ", ".join(notes)})
    text = []
    if entry.too_small_to_choose():
        from denoise_core.baselines import CHOICE_MIN_IMAGES, CHOICE_MIN_PIXELS

        text.append(f"The validation split ({entry.val_images} images, {entry.val_pixels:,} pixels in all) is too "
                    f"small to choose a baseline on (that takes {CHOICE_MIN_IMAGES} images and {CHOICE_MIN_PIXELS:,} "
                    f"pixels): the best on validation need not be the best on test, so read every row.")
    if top and chosen and top != chosen:
        text.append(f"On the test images {baseline_label(top, entry.channels)} scores highest "
                    f"({scored[top].test[metric]:.2f} {u}), {_by(scored[top].test[metric] - scored[chosen].test[metric], u)} "
                    f"the validation choice.")
    note = f'<p class="muted baseline-note">{escape(" ".join(text))}</p>' if text else ""
    frame = pd.DataFrame(rows)
    if not frame["published"].any():  # no reference matches this setting (crops protocol, say): no empty column
        frame = frame.drop(columns="published")
    return table(frame, f"baselines-{i}") + note


def _published_baseline(a: Analysis, cell: str, name: str):
    """The published row of baseline `name` on this cell's test set, noise, level and metric, if the spec has one."""
    for ref in a.results.spec.references:
        if ref.baseline == name and ref.metric == a.score.metric and \
                any(c == cell and sfx == "" for c, sfx in _reference_cells(a, ref)):
            return ref
    return None


def _test_images(c) -> str:
    """The images a comparison paired: a claim over several slices counts each test image once in each."""
    if not c.n_images:
        return ""
    parts = [f"{c.n_images // c.n_slices} in each of {c.n_slices} slices"] if c.n_slices > 1 else []
    parts += [f"crops of {c.n_sources}"] if c.n_sources else []
    return f"{c.n_images} ({', '.join(parts)})" if parts else str(c.n_images)


def _comparisons(a: Analysis) -> str:
    q = a.results.spec.question_factor()
    rows = []
    for c in a.family.comparisons:  # slice by slice in the spec's order, then the pooled claims
        what = (f"{q}={c.a} vs {q}={c.b}" if c.kind != "baseline" else f"{q}={c.a} vs {_baseline_of(a, c)}")
        rows.append({"slice": ", ".join(f"{k}={v}" for k, v in c.where.items()) or "all", "comparison": what,
                     f"difference ({a.unit}, in the first's favour)": c.gain, "interval low": c.lo, "interval high": c.hi,
                     "BH-adjusted p": c.q,
                     "significant": ("yes" if c.significant else "no" if c.estimable else "too few runs or images")
                     + (" (borderline)" if c.borderline else "")
                     + (" (no meaningful difference)" if not c.significant and c.decided(margin_of(a.results.spec, c)) else ""),
                     f"could detect ({a.unit}, {POWER:.0%} power)": c.detectable(),
                     "seeds a side for this difference": "" if c.significant or not c.estimable else _seeds_text(c),
                     "runs": f"{c.n_runs[0]} vs {c.n_runs[1]}", "test images": _test_images(c), "method": c.method}
                    | ({"look (runs a cell)": c.look, "level": f"{c.confidence:.2%}"} if len(a.looks) > 1 else {}))
    if not rows:
        return ""
    level = "its look's level" if len(a.looks) > 1 else f"the page's {a.confidence:.1%} level"
    note = (f'<p class="muted" id="precision">Precision. "could detect" is the smallest true difference these runs '
            f"and test images would find significant {POWER:.0%} of the time at {level}; a "
            f"difference below it can hide in an undecided comparison. For each undecided one, \u201cseeds a side\u201d "
            f"is how many confirm runs of each side its own difference would need to be found so, the test images kept, "
            f"projected from the mixed model's variance components (run, image and residual); \u201cmore test images\u201d "
            f"where the images' own spread is the floor no number of seeds gets under. A borderline result has its "
            f"interval's end within 10% of the half-width from zero: another machine's float order or a few more "
            f"runs can move it across.</p>")
    heading = "each at its look's level" if len(a.looks) > 1 else f"{a.confidence:.1%} intervals"
    return (f'<h2 id="comparisons">Every comparison ({heading})</h2>'
            + table(pd.DataFrame(rows), "comparison-table", lambda i: "sig" if rows[i]["significant"].startswith("yes")
                    else "") + note)


def _seeds_text(c) -> str:
    """What an undecided comparison's own difference would need: seeds a side, or more test images."""
    if c.vc is None:
        return ""
    n = c.seeds_for(c.gain)
    return str(n) if n is not None else "more test images"


def _precision(a: Analysis, c) -> str:
    """An undecided comparison's precision in words: what it could detect, and what its difference would need."""
    if c is None or c.significant or not c.estimable:
        return ""
    out = f"; could detect {c.detectable():.2f} {a.unit} ({POWER:.0%} power)"
    if c.vc is not None:
        n = c.seeds_for(c.gain)
        out += f"; {abs(c.gain):.2f} {a.unit} would need " + (f"{n} seeds a side" if n else "more test images")
    return out


def _figures(a: Analysis, figs: Figures) -> str:
    spec = a.results.spec
    s = F.summary(a)
    if s.empty:
        return '<h2 id="comparison">Comparison</h2><p>No confirm run has finished yet.</p>'
    out = ['<h2 id="comparison">Comparison</h2>']
    kind = spec.comparison_figure()
    out += [figs.add(f) for f in F.FIGURES.get(kind)(a)]
    task, view = get_task(spec.task), ReportView(spec.metric, s, a.configs)
    out += [figs.add(f) for f in (task.figures(view) if task.figures else [])]
    out.append(figs.add(F.bars(a)))
    base = {sl.label: sl.baseline for sl in a.slices if sl.baseline}
    rows = []
    for _, r in s.iterrows():
        row = {f: r[f] for f in spec.compare} | {f"mean {a.score.split} {spec.metric}": r["mean"],
                                                   "interval low": r["lo"], "interval high": r["hi"], "runs": int(r["n"]),
                                                   "diverged runs": int(r["diverged"])}
        row |= {f"mean {m}": r[m] for m in spec.also if m in r}
        b = base.get(", ".join(f"{f}={r[f]}" for f in spec.other_factors()))
        if b:
            row["best baseline"] = f"{b.label} {sig3(b.mean)}"
        rows.append(row)
    out.append(table(pd.DataFrame(rows), "cell-table"))
    out += [f'<p class="muted task-note">{escape(note)}</p>' for note in (task.notes(view) if task.notes else [])]
    return "".join(out)


def _images(a: Analysis) -> str:
    r, spec = a.results, a.results.spec
    task = get_task(spec.task)
    if task.grid is None:
        parts = [f'<h2 id="images">{escape(task.images_caption)}</h2>']
        for cell in r.info.cells:
            for name in task.images:
                if (p := r.best_file(cell, f"{name}.png")) is not None:
                    parts.append(f'<div class="grid"><div>{escape(cell_label(parse_cell(cell)))} ({name})</div>'
                                 f"{png(p, cell)}</div>")
        return "".join(parts)
    grid = task.grid
    q = spec.question_factor()
    head = "".join(f"<th>{escape(q)}={escape(lv)}</th>" for lv in spec.labels(q))
    body, clean = [], None
    for sl in a.slices:
        cells = {lv: spec.key_of({**sl.where, q: lv}) for lv in spec.labels(q)}
        first = next((c for c in cells.values() if r.best_file(c, "images.json")), None)
        if first is None:
            continue
        clean = clean or r.best_file(first, f"{grid.clean}.png")
        shown = ShownImages.read(r.best_file(first, "images.json")).psnr
        tds = [_tile(r.best_file(first, f"{grid.input}.png"), "noisy input", shown.get(grid.input), a.unit)]
        b = sl.baseline
        img = r.sdir / b.image if b and b.image else None
        tds.append(_tile(img, b.label, b.image_psnr, a.unit) if img is not None and img.exists() else "<td></td>")
        for lv, cell in cells.items():
            p, meta = r.best_file(cell, f"{grid.output}.png"), r.best_file(cell, "images.json")
            if spec.excluded({**sl.where, q: lv}):
                why = spec.why_excluded({**sl.where, q: lv}, r.info.budget or "quick")
                tds.append(f'<td class="excluded">{escape(f"{q}={lv}")}<div>excluded ({escape(why)})</div></td>')
                continue
            tds.append(_tile(p, f"{q}={lv}", ShownImages.read(meta).psnr.get(grid.output), a.unit)
                       if p and meta else "<td></td>")
        body.append(f"<tr><th>{escape(sl.label or 'all')}</th>{''.join(tds)}</tr>")
    if not body:
        return ""
    top = f"<p>{png(clean, 'clean image', 'clean')}clean</p>" if clean else ""
    # tiles narrow enough that every column fits the page's width (1200 px less the row label), at most 160 px
    side = max(64, min(160, (1200 - 160) // (2 + len(spec.labels(q))) - 20))
    return (f'<h2 id="images">The same held-out image, denoised by each cell\'s best model</h2>'
            f'<p class="muted">PSNR against the clean image under each tile; the best classical baseline was chosen on '
            f"validation images.</p>{top}"
            f'<table id="image-table" style="--tile:{side}px"><tr><th></th><th>noisy input</th><th>best baseline</th>{head}</tr>{"".join(body)}</table>')


def _tile(path, label: str, value, unit: str) -> str:
    if path is None:
        return "<td></td>"
    v = f"{value:.2f} {unit}" if isinstance(value, (int, float)) and math.isfinite(value) else ""
    return f"<td>{png(path, label, 'tile')}<div>{escape(label)}</div><div><b>{escape(v)}</b></div></td>"


def _curves(a: Analysis, figs: Figures) -> str:
    notes = "".join(f'<p class="collapse">{escape(c)}</p>' for c in a.collapses)
    if a.zero_shot_cells:
        q = a.results.spec.question_factor()
        fitted = {str(parse_cell(c).get(q)) for c in a.zero_shot_cells}
        levels = [v for v in a.results.spec.labels(q) if v in fitted]
        names = " and ".join(f"{q}={v}" for v in levels)
        notes += (f'<p class="muted">{escape(names)} {"trains" if len(levels) == 1 else "train"} nothing before '
                  "evaluation: each validation image gets a fit of its own, so its score is a dashed level across the "
                  "panel (the mean over its confirm runs), not a curve.</p>")
    return '<h2 id="curves">Learning curves</h2>' + notes + figs.add(F.learning_curves(a))


def _tuning(a: Analysis, figs: Figures) -> str:
    r = a.results
    out = ['<h2 id="tuning">Tuning</h2>']
    if not r.spec.tune_for(r.info.budget):
        return out[0] + "<p>This study tunes nothing: every cell runs its fixed configuration.</p>"
    out += [figs.add(f) for f in F.tuning(a)]
    try:
        imp = F.importances(r.optuna_studies())
        out.append(figs.add(imp) if imp else '<p class="muted">Parameter importances are not shown: they need two '
                   "or more tuned parameters and at least 8 completed tuning trials per cell.</p>")
    except Exception as e:  # noqa: BLE001 - an unreadable Optuna storage still leaves a useful report
        out.append(f"<p>Optuna storage could not be read: {escape(str(e).splitlines()[0])}</p>")
    out.append(figs.add(F.parallel(a)))
    return "".join(out)


def _best_table(a: Analysis) -> str:
    conf = a.results.confirm_runs()
    if conf.empty:
        return '<h2 id="best">Best configuration per cell</h2><p>No confirm runs yet.</p>'
    rows = []
    for cell in a.results.spec.cell_keys():
        g = conf[conf.cell == cell]
        if g.empty:
            continue
        params = json.loads(g.params.iloc[0])
        stat = a.cells.get(cell)  # its score beside what it needed, so that a reader weighs the two together
        score = {f"mean {a.score.split} {a.results.spec.metric} ({a.unit})": stat.mean if stat else None}
        rows.append({**parse_cell(cell), **score, **{k: (float(v) if isinstance(v, float) else v) for k, v in params.items()},
                     **_data_needs(a, cell)})
    return '<h2 id="best">Best configuration per cell</h2>' + table(pd.DataFrame(rows), "best-table")


def _data_needs(a: Analysis, cell: str) -> dict:
    """What a denoising cell's training scheme needed of the data, beside its configuration, so that a reader can pick
    the method for the data they have: shown when the study trains by anything but Noise2Clean on fresh noise."""
    from denoise_core.noise import NOISES
    from denoise_core.schemes import build_scheme
    from denoise_core.sources import parse, split_source

    configs = a.configs
    if a.results.spec.task != "denoise" or all(c.target == "clean" and c.train_captures == "fresh"
                                               for c in configs.values()):
        return {}
    cfg = configs[cell]
    scheme = build_scheme(cfg.target, **cfg.target_params)
    if scheme.zero_shot:  # no training set at all: a network fitted on each image it denoises
        return {"training scheme": cfg.target, "it needs": scheme.needs, "training captures": "none",
                "network passes per test image": scheme.plan(cfg.fit_steps)}
    captured = NOISES.get(cfg.noise).captured
    single = captured and parse(split_source(cfg.dataset, "train")[0])[0].train_only
    return {"training scheme": cfg.target, "it needs": scheme.needs,
            "training captures": ("one per image file" if single else "the scenes' own" if captured else
                                  "fresh at every step" if cfg.train_captures == "fresh" else cfg.train_captures),
            "network passes per test image": scheme.passes()}


def _how_it_ran(a: Analysis, figs: Figures) -> str:
    r, t = a.results, a.results.table
    runs = r.info.runs
    spans = [run_span(run) for run in runs]
    dur = t["duration_s"].fillna(0) if "duration_s" in t else pd.Series(dtype=float)
    gpu_h = float((dur * t["gpus"].fillna(0)).sum() / 3600) if not t.empty else 0.0
    counts = t.status.value_counts().to_dict() if not t.empty else {}
    parts = [f"<p>Budget <b>{escape(str(r.info.budget))}</b>: {r.info.planned} planned trials "
             f"({len(r.info.cells)} cells x ({r.info.trials_per_cell} "
             f"{'tuning' if r.spec.tune_for(r.info.budget) else 'untuned first run' + 's' * (r.info.trials_per_cell > 1)} + {r.info.seeds} confirm)"
             f"{_waves(r)}); "
             f"trials by status: {escape(', '.join(f'{v} {k}' for k, v in counts.items()))}. "
             f"Running time {sum(s for s, _ in spans) / 60:.1f} min over {len(runs)} run(s); trial-hours "
             f"{dur.sum() / 3600:.2f}; GPU-hours {gpu_h:.2f}.</p>"]
    c = F.at_once(t)
    if not c.empty:
        held = c.time.diff().shift(-1).fillna(0)  # how long each count held
        busy = held[c.running > 0]
        mean = float((c.running * held).sum() / busy.sum()) if busy.sum() > 0 else float(c.running.max())
        n = F.slots(r.info.last_run, t)
        parts.append(f"<p>Trials at once: at most {int(c.running.max())}, {mean:.1f} on average while any ran"
                     + (f", on a cluster that held {n} at once" if n is not None else "")
                     + (f"; a cell's tuning trials ran in waves of q={r.info.tune_parallel}" if r.info.tune_parallel
                        else "") + ".</p>")
        parts.append(figs.add(F.concurrency(a)))
    rows = [{"run": i + 1, "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.start)),
             "minutes": s / 60, "ended": how} for i, (run, (s, how)) in enumerate(zip(runs, spans))]
    if rows:
        parts.append(table(pd.DataFrame(rows), "runs-table"))
    failed = t[t.status.isin([FAILED, DIVERGED])] if not t.empty else t
    if not failed.empty:
        parts.append('<h3 id="failures">Failed and diverged trials</h3>'
                     + table(failed[["trial_id", "cell", "phase", "status", "attempts", "error"]].assign(
                         cell=failed.cell.map(lambda c: cell_label(parse_cell(c))))))
    if runs:
        last = runs[-1]
        parts.append(f"<p>Command: <code>{escape(last.command)}</code></p>")
        res = {k: v for k, v in last.resources.items() if not k.startswith("node:")}
        parts.append(f"<p>Ray cluster: {last.nodes if last.nodes is not None else '?'} node(s), resources "
                     f"<code>{escape(json.dumps(res))}</code></p>")
        parts.append(f"<p>Versions: <code>{escape(json.dumps(last.versions))}</code></p>")
    return '<h2 id="run">How it ran</h2>' + "".join(parts)

