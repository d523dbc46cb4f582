"""Pydantic validation errors as one line that names the key (no heavy imports: the CLI uses it)."""
from __future__ import annotations


def one_line_error(e) -> str:
    """'key.path: message (got value)' for the first error of a pydantic ValidationError."""
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if isinstance(got, (str, int, float, bool, type(None))) and repr(got) not in msg:
        msg += f" (got {got!r})"
    return f"{where}: {msg}"
