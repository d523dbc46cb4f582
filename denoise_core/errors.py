"""Pydantic validation errors as one line that names the key (no heavy imports: the CLI uses it)."""
from __future__ import annotations


def one_line_error(e, drop_prefix: str | None = None) -> str:
    """'key.path: message (got value)' for the first error of a pydantic ValidationError.
    `drop_prefix`: a discriminated union's tag, which pydantic puts first in every location."""
    err = e.errors()[0]
    loc = list(err["loc"])
    if drop_prefix is not None and loc[:1] == [drop_prefix]:
        loc = loc[1:]
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across fields: its message names the keys itself
        return msg
    where = ".".join(str(p) for p in loc)
    got = err.get("input")
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if isinstance(got, (str, int, float, bool, type(None))) and repr(got) not in msg:
        msg += f" (got {got!r})"
    return f"{where}: {msg}"
