"""Naming cells and trials' places in a study (no heavy imports: the CLI, records and report use it).

A cell is a dict {factor: label}. `cell_key` names it in one string ("noise=gaussian,loss=l1", with
backslash, comma and equals sign escaped inside names and labels, so any label text survives) and
`parse_cell` reads it back; `cell_label` is how people read it. A trial's config carries its place in
the study (`TrialMeta`) under `META`.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field


def _escape(text: str) -> str:
    return re.sub(r"([\\,=])", r"\\\1", str(text))


def cell_key(cell: dict[str, str]) -> str:
    r"""One string naming a cell; names and labels may hold any text.

    >>> cell_key({"noise": "gaussian", "loss": "l1"})
    'noise=gaussian,loss=l1'
    >>> key = cell_key({"level": "sigma=25, clipped", "loss": "l1"}); key
    'level=sigma\\=25\\, clipped,loss=l1'
    >>> parse_cell(key)
    {'level': 'sigma=25, clipped', 'loss': 'l1'}
    """
    return ",".join(f"{_escape(k)}={_escape(v)}" for k, v in cell.items())


def parse_cell(key: str) -> dict[str, str]:
    """The inverse of `cell_key`; a ValueError when `key` is not of the form factor=level,factor=level."""
    cell, name, text, escaped = {}, None, "", False
    for ch in key + ",":
        if escaped:
            text, escaped = text + ch, False
        elif ch == "\\":
            escaped = True
        elif ch == "=" and name is None:
            name, text = text, ""
        elif ch == ",":
            if name is None:
                raise ValueError(f"{key!r} is not a cell: expected factor=level[,factor=level ...]")
            cell[name], name, text = text, None, ""
        else:
            text += ch
    return cell


def in_slice(cell: dict[str, str], where: dict) -> bool:
    """Whether a cell lies in the slice `where`: every factor it names at the level it names (as text).

    >>> in_slice({"noise": "poisson", "scheme": "R2R"}, {"noise": "poisson"}), in_slice({"noise": "gaussian"}, {"noise": "poisson"})
    (True, False)
    """
    return all(cell.get(f) == str(lv) for f, lv in where.items())


def cell_label(cell: dict[str, str]) -> str:
    """A cell as people read it: 'noise=gaussian, loss=l1' (not escaped: for display only)."""
    return ", ".join(f"{k}={v}" for k, v in cell.items())


META = "_study"  # the config key under which a trial carries its place in the study
CONFIRM_SEED_BASE = 1000  # confirm seeds 1000, 1001 ...: distinct from every tuning trial's seed


def confirm_index(seed: int) -> int:
    """A confirm run's index in its cell (0 for the first seed): the look it belongs to follows from it."""
    return int(seed) - CONFIRM_SEED_BASE


@dataclass
class TrialMeta:
    """Where a trial stands in its study: its cell, phase and tuned values, and the resources it holds.
    It travels in the trial's config under META; the trainable strips it before the trial sees it."""

    cell: str = ""
    phase: str = "tune"  # tune | confirm
    factors: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    number: int | None = None  # the Optuna trial number (tune), the seed index (confirm)
    cpus: float = 1.0
    gpus: float = 0.0

    @classmethod
    def of(cls, config: dict) -> "TrialMeta":
        return cls(**config.get(META, {}))

    def attach(self, config: dict) -> dict:
        return {**config, META: asdict(self)}

    @staticmethod
    def strip(config: dict) -> dict:
        """The trial's own config: everything but META."""
        return {k: v for k, v in config.items() if k != META}
