"""Pydantic validation errors as one line that names the key (no heavy imports: the CLI uses it)."""
from __future__ import annotations


def _allowed_keys(model, loc: list) -> list[str]:
    """The field names of the pydantic model that holds the key at `loc` (walking nested models and the
    values of dict fields), or [] when the location cannot be followed."""
    import typing

    current, path = model, loc[:-1]
    for part in path:
        fields = getattr(current, "model_fields", None)
        if fields is not None:
            if part not in fields:
                return []
            current = fields[part].annotation
            continue
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if typing.get_origin(current) is dict and len(args) == 2:
            current = args[1]  # a dict's key: go on into its value type
        elif len(args) == 1:  # Optional[X]
            current = args[0]
        else:
            return []
    while getattr(current, "model_fields", None) is None:
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if not args:
            return []
        current = args[-1]
    return list(current.model_fields)


def one_line_error(e, drop_prefix: str | None = None, model=None) -> str:
    """'key.path: message (got value)' for the first error of a pydantic ValidationError.
    `drop_prefix`: a discriminated union's tag, which pydantic puts first in every location.
    `model`: the validated pydantic model, so that an unknown key's line lists the keys allowed there."""
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
        allowed = _allowed_keys(model, list(err["loc"])) if model is not None else []
        return f"{where}: unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if isinstance(got, (str, int, float, bool, type(None))) and repr(got) not in msg:
        msg += f" (got {got!r})"
    return f"{where}: {msg}"
