"""The `modules` column (spec §2): "(10),emb; (10,768),layer_1" <-> [("emb", (10,)), ("layer_1", (10, 768))].

A trace is the ordered list of module calls one example went through. Each call is
`(<input shape without batch dim>),<name>`; calls are separated by `;`, spaces around separators allowed.
"""

from __future__ import annotations

import re

Shape = tuple[int, ...]
Call = tuple[str, Shape]  # (module name, input shape)

# one call: "(d1,d2,...),name" with optional spaces; names are module_list keys (no ; , ( ) or spaces)
_CALL = re.compile(r"^\(\s*(?P<shape>[^()]*?)\s*\)\s*,\s*(?P<name>[^\s;,()]+)$")
_DIM = re.compile(r"^[0-9]+$")
_MAX_DIGITS = 12  # more digits than any allowed dimension: refused before int() (which stops at 4,300 digits)
MAX_DIM = 2**31 - 1  # no real input is that large; bigger values would overflow the counting code


class TraceError(ValueError):
    """A malformed `modules` value. The message says which call and what is wrong."""


def parse_trace(text: str) -> list[Call]:
    """Parse a `modules` value into [(name, shape), ...]. Raises TraceError on anything malformed."""
    if text is None or not text.strip():
        raise TraceError("empty modules value: every example must list at least one module call")
    calls: list[Call] = []
    for pos, raw in enumerate(text.split(";"), start=1):
        part = raw.strip()
        if not part:
            raise TraceError(f"call {pos} is empty (stray ';'?)")
        m = _CALL.match(part)
        if m is None:
            raise TraceError(
                f"call {pos} {part!r} is not of the form '(<shape>),<name>', e.g. '(10,768),layer_1'"
                + _form_hint(part)
            )
        dims = [d.strip() for d in m.group("shape").split(",")] if m.group("shape").strip() else []
        if not dims:
            raise TraceError(f"call {pos} {part!r} has an empty shape")
        what = f"call {pos} {_short(part)}"
        for d in dims:
            if not _DIM.match(d):
                hint = (
                    " (no trailing comma: write (768), not Python's (768,))"
                    if d == "" and dims[-1] == ""
                    else ""
                )
                raise TraceError(f"{what}: shape dimension {_short(d)} is not a non-negative integer{hint}")
        shape = _dims(dims, what, _EMPTY_CALL_HINT)
        calls.append((m.group("name"), shape))
    return calls


_SHAPE_THEN_ANY = re.compile(r"^\(\s*[^()]*?\s*\)\s*,\s*(?P<name>.+)$")
_NAME_THEN_SHAPE = re.compile(r"^[^\s;,()]+\s*,\s*\([^()]*\)$")


def _form_hint(part: str) -> str:
    """What is wrong with a call that is not `(<shape>),<name>`, where a common mistake explains it."""
    if _NAME_THEN_SHAPE.match(part):
        return " (the name comes after the shape)"
    m = _SHAPE_THEN_ANY.match(part)
    if m and re.search(r"[\s,]\(", m.group("name")):
        return " (calls are separated by ';')"
    if m:
        return (
            f" (module name {_short(m.group('name'))}: a name in the modules column holds no spaces, commas, "
            "';' or parentheses; give the module another key in module_list)"
        )
    return ""


def _short(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


# a call whose input is empty (an MoE expert no token was routed to, a layer after every token left) made
# no call: the trace lists the calls an example went through, so it is left out rather than priced at 0
_EMPTY_CALL_HINT = " (a module that got no input, e.g. an expert no token was routed to, was not called: leave it out of the trace)"


def _dims(digits: list[str], what: str, zero_hint: str = "") -> Shape:
    """Checked dimensions from strings of ASCII digits."""
    if any(len(d.lstrip("0")) > _MAX_DIGITS for d in digits):
        raise TraceError(f"{what}: a shape dimension is too large (at most {MAX_DIM:,})")
    shape = tuple(int(d) for d in digits)
    _check_dims(shape, what, zero_hint)
    return shape


def _check_dims(shape: Shape, what: str, zero_hint: str = "") -> None:
    if any(d == 0 for d in shape):
        raise TraceError(f"{what}: shape dimensions must be positive{zero_hint}")
    if any(d > MAX_DIM for d in shape):
        raise TraceError(f"{what}: shape dimension {max(shape)} is too large (at most {MAX_DIM:,})")


def format_shape(shape: Shape) -> str:
    return "(" + ",".join(str(int(d)) for d in shape) + ")"


def format_trace(calls: list[Call] | tuple[Call, ...]) -> str:
    """Inverse of parse_trace: [("emb", (10,)), ...] -> "(10),emb; ..."."""
    if not calls:
        raise TraceError("cannot write an empty trace")
    return "; ".join(f"{format_shape(shape)},{name}" for name, shape in calls)


def parse_shape(text: str) -> Shape:
    """ "24,768" or "(24,768)" -> (24, 768), for command lines."""
    body = text.strip().strip("()")
    dims = [d.strip() for d in body.split(",")]
    if not body.strip() or not all(_DIM.match(d) for d in dims):
        raise TraceError(
            f"shape {_short(text)} is not a comma-separated list of positive integers, e.g. 24,768"
        )
    return _dims(dims, f"shape {_short(text)}")
