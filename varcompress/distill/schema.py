"""A tiny strict schema checker for recipes: every failure is one VarcompressError naming the key path.

A schema is a dict `key -> (checker, default)`; `REQUIRED` marks keys without a default.
Checkers take (value, path) and return the normalised value or call `fail(path, why)`.
Messages read like `stages[1].lr: expected a positive number, got 'fast'`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import VarcompressError

REQUIRED = object()
Checker = Callable[[Any, str], Any]


def fail(path: str, why: str):
    raise VarcompressError(f"{path or 'recipe'}: {why}")


def show(v: Any) -> str:
    """A short, safe rendering of a user value for error messages."""
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, (list, tuple)):
        return "a list"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def join(path: str, key: Any) -> str:
    if not (isinstance(key, str) and key.isprintable() and key.strip() == key and key):
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def mapping(schema: dict[str, tuple[Checker, Any]], what: str = "a mapping") -> Checker:
    """Check a mapping against `schema`: unknown keys, missing keys, defaults filled in."""
    def check(v, path):
        if v is None:
            v = {}
        if not isinstance(v, Mapping):
            fail(path, f"expected {what}, got {show(v)}")
        for k in v:
            if not isinstance(k, str):
                fail(path, f"keys must be strings, got {show(k)}")
            if k not in schema:
                fail(join(path, k), f"unknown key (expected one of: {', '.join(schema)})")
        out = {}
        for k, (chk, default) in schema.items():
            if k in v:
                out[k] = chk(v[k], join(path, k))
            elif default is REQUIRED:
                fail(join(path, k), "missing (required)")
            else:
                out[k] = chk(default() if callable(default) else default, join(path, k))
        return out
    return check


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
           what: str | None = None) -> Checker:
    if what is None:
        if lo == 0 and lo_open and hi is None:
            what = "a positive number"
        elif lo == 0 and hi is None:
            what = "a number >= 0"
        else:
            a = "(" if lo_open else "["
            b = ")" if hi_open else "]"
            what = f"a number in {a}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{b}"

    def check(v, path):
        if not _is_num(v):
            fail(path, f"expected {what}, got {show(v)}")
        bad = (lo is not None and (v < lo or (lo_open and v == lo))) or \
              (hi is not None and (v > hi or (hi_open and v == hi)))
        if bad:
            fail(path, f"expected {what}, got {show(v)}")
        return float(v)
    return check


def integer(lo: int | None = None, hi: int | None = None, what: str | None = None) -> Checker:
    if what is None:
        what = ("an integer" if lo is None and hi is None else
                {0: "an integer >= 0", 1: "a positive integer"}.get(lo, f"an integer in [{lo}, {hi}]")
                if hi is None else f"an integer in [{lo}, {hi}]")

    def check(v, path):
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or \
                (hi is not None and v > hi):
            fail(path, f"expected {what}, got {show(v)}")
        return int(v)
    return check


def string(v, path):
    if not isinstance(v, str) or not v.strip():
        fail(path, f"expected a non-empty string, got {show(v)}")
    return v


def boolean(v, path):
    if not isinstance(v, bool):
        fail(path, f"expected true or false, got {show(v)}")
    return v


def choice(*options: str) -> Checker:
    def check(v, path):
        if not isinstance(v, str) or v not in options:
            fail(path, f"expected one of {', '.join(options)}, got {show(v)}")
        return v
    return check


def optional(chk: Checker) -> Checker:
    def check(v, path):
        return None if v is None else chk(v, path)
    return check


def list_of(chk: Checker, min_len: int = 0, what: str = "a list") -> Checker:
    def check(v, path):
        if not isinstance(v, list):
            fail(path, f"expected {what}, got {show(v)}")
        if len(v) < min_len:
            fail(path, f"expected at least {min_len} item(s), got {len(v)}")
        return [chk(x, f"{path}[{i}]") for i, x in enumerate(v)]
    return check


def any_of(*checkers: Checker, what: str) -> Checker:
    """The first checker that accepts the value wins; else one message describing all forms."""
    def check(v, path):
        for chk in checkers:
            try:
                return chk(v, path)
            except VarcompressError:
                continue
        fail(path, f"expected {what}, got {show(v)}")
    return check
