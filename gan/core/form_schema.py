"""The JSON schema the Prefect UI builds its run form from, made for people.

What this module is: `for_form(schema)`, pydantic's `json_schema_extra` hook on every config
record (`gan.core.config.Frozen`). Pydantic writes an optional field (`int | None = None`: "keep
the preset's value") as `anyOf: [{integer}, {null}]`, which the Prefect UI shows as a type
toggle with "Property is type None", and it shows bounds nowhere until a generic "-1 is not
valid under any of the given schemas". Here each such property becomes its plain type (an
input; a dropdown for a Literal, whose empty choice the UI sends as null; a switch for a
bool) that may be left empty, and its bounds are written into its description ("≥ 1,
≤ 10000"), so the form shows them up front and the server's validation names the field and
the bound it broke.

What it is not: validation stays pydantic's, on the Python types (None still means "the
preset's value"); only the published schema changes.
"""

from __future__ import annotations

from typing import Any

NULL = {"type": "null"}
BOUNDS = (("minimum", "≥ {}"), ("exclusiveMinimum", "> {}"), ("maximum", "≤ {}"),
          ("exclusiveMaximum", "< {}"))


def for_form(schema: dict[str, Any], cls: type | None = None) -> None:
    """Rewrite `schema` (one model's, in place): optional fields plain, bounds described."""
    props = schema.get("properties", {})
    recipe = "preset" in props  # RetrainParams: an empty field keeps the preset's value
    for prop in props.values():
        optional = _drop_null(prop)
        _describe_bounds(prop, "; empty: the preset's value" if optional and recipe else "")


def _drop_null(prop: dict[str, Any]) -> bool:
    """`anyOf: [X, null]` with default None → X, not required, no default shown."""
    options = prop.get("anyOf")
    if not options or NULL not in options:
        return False
    rest = [o for o in options if o != NULL]
    if len(rest) != 1:
        return False
    del prop["anyOf"]
    prop.update(rest[0])
    if prop.get("default", 0) is None:
        del prop["default"]  # empty in the form = the preset's value
    if "enum" in prop:  # a dropdown left empty is sent as null by the UI: allow it, untyped
        prop["enum"] = [*prop["enum"], None]
        prop.pop("type", None)
    return True


def _describe_bounds(prop: dict[str, Any], empty: str) -> None:
    """"Training epochs." → "Training epochs (≥ 1, ≤ 10000); empty: the preset's value."."""
    said = [fmt.format(prop[k]) for k, fmt in BOUNDS if k in prop]
    text = prop.get("description", "").rstrip(".")
    if said:
        text = f"{text} ({', '.join(said)})" if text else ", ".join(said)
    if "empty" in text.lower():  # the field says itself what empty means
        empty = ""
    if said or empty:
        prop["description"] = f"{text}{empty}."
