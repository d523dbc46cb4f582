"""Tests only: hold one phase of a real `denoise-study` process open, so that a test can signal it there.

A process whose PYTHONPATH holds this folder, with DENOISE_TEST_HOLD="module:function[:calls]" set, runs the
function's first `calls` calls (default 0) as they are; the next one writes the file DENOISE_TEST_HOLD_MARK and
sleeps up to 120 s before it runs: the phase is then open, and the test sends its signal. `calls` "never" holds
no call; several functions are separated by commas. With DENOISE_TEST_HOLD_CALLS set, each call appends a line
to that file: the function and the repr of its arguments after the first. Ray's workers inherit the
environment of a Ray the process starts itself, so a function run in a Ray task can be held too. The module is
patched when it is first imported (no import here until then), the function being `name` or `Class.name`.
Nothing happens in a process without DENOISE_TEST_HOLD.
"""
import os

HOLD = os.environ.get("DENOISE_TEST_HOLD")


def _held(qualname: str, original, let_through: int):
    """`original`, its call number `let_through` + 1 held: the mark written, then up to 120 s of sleep."""
    import time
    from pathlib import Path

    calls = [0]

    def held(*args, **kwargs):
        calls[0] += 1
        if log := os.environ.get("DENOISE_TEST_HOLD_CALLS"):
            with open(log, "a") as f:
                f.write(f"{qualname} {args[1:]!r}"[:300].replace("\n", " ") + "\n")
        if calls[0] == let_through + 1:
            Path(os.environ["DENOISE_TEST_HOLD_MARK"]).write_text(str(os.getpid()))
            for _ in range(1200):
                time.sleep(0.1)
        return original(*args, **kwargs)

    return held


def _install(spec: str) -> None:
    """Patch `module:function[:calls]` when the module is first imported (a finder on sys.meta_path)."""
    import importlib.abc
    import importlib.util
    import sys

    module, qualname, *rest = spec.split(":")
    let_through = -1 if rest == ["never"] else int(rest[0]) if rest else 0

    def patch(mod) -> None:
        owner, name = mod, qualname
        if "." in qualname:
            cls, name = qualname.split(".")
            owner = getattr(mod, cls)
        setattr(owner, name, _held(qualname, getattr(owner, name), let_through))

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != module:
                return None
            sys.meta_path.remove(self)  # the module's own spec, found without this finder
            try:
                found = importlib.util.find_spec(fullname)
            finally:
                sys.meta_path.insert(0, self)
            if found is None or found.loader is None:
                return found
            exec_module = found.loader.exec_module

            def exec_and_patch(mod):
                exec_module(mod)
                patch(mod)

            found.loader.exec_module = exec_and_patch
            return found

    sys.meta_path.insert(0, Finder())


for _spec in filter(None, (HOLD or "").split(",")):
    _install(_spec)
