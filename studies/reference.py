"""The spec reference a user writes a study from, generated from the code so it cannot drift: every key
of the study, its budgets and tune entries, and each task's trial keys, read from the pydantic models
(type, default, bounds, and the comment beside the field); every registered noise, model, loss,
schedule and task with its parameters and their defaults, read from the registries' builders.

    denoise-study spec              # every section
    denoise-study spec noise        # one section
"""
from __future__ import annotations

import inspect
import re
from typing import Callable

SECTIONS = ("study", "budget", "tune", "claim", "references", "trial", "noise", "model", "loss", "target", "schedule",
            "dataset", "task")
ALIASES = {"budgets": "budget", "expect": "claim", "claims": "claim", "reference": "references"}  # the YAML's own key


def model_sections() -> dict:
    """{pydantic model a study YAML may hold: (its section, the header that says where it goes)}."""
    from studies.spec import Budget, Claim, Param, Reference, StudySpec

    return {
        StudySpec: ("study", "Study YAML (top level):"),
        Budget: ("budget", "budgets.<smoke|quick|full> (each required; trial keys here override `fixed`):"),
        Param: ("tune", "tune.<trial key> (dotted for nested keys, e.g. model_params.width); type: uniform | "
                        "loguniform | int (low, high) or choice (values):"),
        Claim: ("claim", "expect[] (claims from the literature, the report's verdicts):"),
        Reference: ("references", "references[] (published rows, shown beside ours where test set, noise, level and "
                                  "metric match):"),
    }


def nested_models(annotation) -> list:
    """The pydantic models inside a field's type (`dict[str, Budget]` -> [Budget])."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in nested_models(arg)]


def _comments(cls) -> dict[str, str]:
    """The comment beside each field in the class body (`name: type = default  # comment`), or the block of comment
    lines just above it."""
    out = {}
    for klass in reversed(cls.__mro__):
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in src.splitlines():
            if m := re.match(r"^\s{4}#\s*(.+)$", line):
                above.append(m.group(1).strip())
                continue
            if m := re.match(r"^\s{4}(\w+):[^\n#]*?(?:#\s*(.+))?$", line):
                if m.group(2) or above:
                    out[m.group(1)] = (m.group(2) or " ".join(above)).strip()
            above = []
    return out


def _type(annotation) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    text = re.sub(r"<class '(\w+)'>", r"\1", text).replace("studies.spec.", "")
    sections = model_sections()
    see = [sections[m][0] for m in nested_models(annotation) if m in sections]
    return text + (f" (see `spec {see[0]}`)" if see else "")


def _bounds(field) -> str:
    parts = []
    for m in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{sym} {getattr(m, attr)}")
    return ", ".join(parts)


def model_rows(cls) -> list[tuple[str, str, str, str]]:
    """(key, type and bounds, default, what it is) for every field of a pydantic model."""
    from pydantic_core import PydanticUndefined

    notes = _comments(cls)
    rows = []
    for name, f in cls.model_fields.items():
        if f.default is not PydanticUndefined:
            default = repr(f.default)
        elif f.default_factory is not None:
            default = repr(f.default_factory())
        else:
            default = "required"
        kind = _type(f.annotation) + (f" ({_bounds(f)})" if _bounds(f) else "")
        rows.append((name, kind, default, notes.get(name, "")))
    return rows


def first_sentence(doc: str) -> str:
    """A docstring's first sentence whole, however its lines wrap.

    >>> first_sentence("Two stride-2 convs down to a bottleneck at 1/4 resolution, two transposed\\nconvs back up. More.")
    'Two stride-2 convs down to a bottleneck at 1/4 resolution, two transposed convs back up.'
    """
    para = " ".join(doc.split("\n\n")[0].split())
    m = re.search(r"\.(\s|$)", para)
    return para[:m.start() + 1] if m else para


def registry_rows(registry, doc: Callable = None) -> list[tuple[str, str, str, str]]:
    """(name, parameters with defaults, unit or level parameter, first line of its docstring)."""
    rows = []
    for name in registry.names:
        builder = registry.get(name)
        params = []
        for p in inspect.signature(builder).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("channels", "T"):
                params.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
        level = getattr(builder, "param", "")
        text = (doc or (lambda b: first_sentence(inspect.getdoc(b) or "")))(builder)
        rows.append((name, ", ".join(params), f"level: {level}" if level else "", text))
    return rows


def _table(rows, header) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + str(r[-1]))
    return "\n".join(line.rstrip() for line in lines)


def section(name: str) -> str:
    """One section of the reference as text."""
    fields = ("key", "type", "default", "what it is")
    name = ALIASES.get(name, name)
    for model, (sec, header) in model_sections().items():
        if sec == name:
            return header + "\n" + _table(model_rows(model), fields)
    if name == "trial":
        from denoise_core.tasks import TASKS

        return "\n\n".join(f"Trial keys of task {t} (in `fixed`, a budget, a factor level or tune):\n"
                           + _table(model_rows(TASKS.get(t).config), fields) for t in TASKS.names)
    if name == "task":
        from denoise_core.tasks import TASKS

        rows = [(t, ", ".join(TASKS.get(t).images) or "-", (inspect.getdoc(TASKS.get(t).config) or "").splitlines()[0])
                for t in TASKS.names]
        return ("Tasks (`task:`; or a module path that registers one; `spec trial` lists each task's keys):\n"
                + _table(rows, ("name", "report images", "what it is")))
    if name == "dataset":
        from denoise_core.sources import SOURCES

        rows = [(n + (":PATH" if n == "folder" else ""), "whole images" if SOURCES.get(n).whole else "small images",
                 SOURCES.get(n).about) for n in SOURCES.names]
        return ("Datasets (`dataset: NAME`, or one per split: `dataset: {train: NAME, val: NAME, test: NAME}`; "
                "bundled sets need no network; the others are read under --data-root):\n"
                + _table(rows, ("name", "kind", "what it is")))
    registries = _registries()
    if name in registries:
        reg, header = registries[name]
        return header + "\n" + _table(registry_rows(reg), ("name", "parameters", "level", "what it is"))
    raise ValueError(f"unknown section {name!r}; sections: {', '.join(SECTIONS)}")


def _registries() -> dict:
    from denoise_core.diffusion import SCHEDULES
    from denoise_core.losses import LOSSES
    from denoise_core.models import MODELS
    from denoise_core.noise import NOISES
    from denoise_core.schemes import SCHEMES
    return {
        "noise": (NOISES, "Noises (`noise:` and `noise_params:`; levels in the literature's units: sigma on the 0-255 "
                          "scale, p and coverage as fractions, lam in photons per unit intensity; a [lo, hi] level is "
                          "drawn per image):"),
        "model": (MODELS, "Models (`model:` and `model_params:`):"),
        "loss": (LOSSES, "Losses (`loss:`):"),
        "target": (SCHEMES, "Training schemes (`target:` and `target_params:`, task denoise; `train_captures` fixes how "
                            "many noisy captures of each training image exist):"),
        "schedule": (SCHEDULES, "DDPM schedules (`schedule:` and `schedule_params:`, task ddpm):"),
    }


def reference(names: tuple[str, ...] = SECTIONS) -> str:
    return "\n\n".join(section(n) for n in names)
