"""One formatter for pydantic validation errors: each problem named as the user wrote it.

What this module is: `explain(err, ...)` turns a `ValidationError` into one
`name: problem (got value)` per error, joined by '; ', where the name is the one the user set:

    style="field"   dotted field path, after an optional `prefix` (`model.image_size`)
    style="flag"    the CLI flag (`--batch-size`)

and `problems(err)`, the bare messages (for callers that name the value themselves).

What it is not: no exception types of its own; callers wrap the text in theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError


def _message(e: Mapping[str, Any]) -> str:
    return str(e["msg"]).removeprefix("Value error, ")


def problems(err: ValidationError) -> list[str]:
    """The errors' messages, without pydantic's `Value error, ` prefix."""
    return [_message(e) for e in err.errors()]


def explain(err: ValidationError, *, prefix: str = "", style: Literal["field", "flag"] = "field",
            values: bool = True) -> str:
    """One `name: problem (got value)` per error, joined by '; '.

    `prefix`: a section the fields are in (`model` → `model.image_size`); `style`: dotted field
    path or `--cli-flag`; `values`: append the value given (off where it may be a secret). An
    error of the whole model (empty path) is named by `prefix` or the model's title."""
    parts = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        if style == "flag":
            name = "--" + "-".join(loc).replace("_", "-")
        else:
            name = ".".join(p for p in (prefix, *loc) if p) or err.title
        got = (f" (got {e['input']!r})"
               if values and loc and not isinstance(e.get("input"), dict) else "")
        parts.append(f"{name}: {_message(e)}{got}")
    return "; ".join(parts)
