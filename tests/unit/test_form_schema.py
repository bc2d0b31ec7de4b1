"""The Prefect run form's schema: plain fields, dropdowns, bounds up front, errors that name
the field and the bound (the same validation the Prefect server runs on a deployment run)."""

from __future__ import annotations

import json

import pytest
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import ValidationError, validate

from flows import params as P
from flows.retrain import retrain


@pytest.fixture(scope="module")
def schema() -> dict:
    return parameter_schema(retrain.fn).model_dump_for_openapi()


def test_no_field_of_the_form_offers_a_null_type_toggle(schema: dict) -> None:
    text = json.dumps(schema)
    assert '"type": "null"' not in text and "anyOf" not in text, text[:500]


def test_choices_are_dropdowns_and_bounds_are_in_the_description(schema: dict) -> None:
    props = schema["definitions"]["RetrainParams"]["properties"]
    assert props["arch"]["enum"][:2] == ["mlp", "dcgan"] and props["arch"]["enum"][-1] is None
    assert props["loss"]["enum"] and "default" not in props["loss"]
    assert props["epochs"]["type"] == "integer" and props["epochs"]["minimum"] == 1
    assert "(≥ 1, ≤ 10000); empty: the preset's value" in props["epochs"]["description"]
    assert "(> 0.0, ≤ 1.0)" in props["lr_g"]["description"]
    assert "empty: the preset's value" not in props["force"]["description"]  # not optional
    run_id = props["run_id"]["description"]
    assert "Empty:" in run_id and "the preset" not in run_id  # says what empty means itself
    data = schema["definitions"]["DataConfig"]["properties"]
    assert data["source"]["enum"][0] == "digits" and data["channels"]["enum"] == [1, 3, None]


@pytest.mark.parametrize("params,field,why", [
    ({"epochs": -1}, "params.epochs", "-1 is less than the minimum of 1"),
    ({"lr_g": 0}, "params.lr_g", "less than or equal to the minimum of 0"),
    ({"arch": "vit"}, "params.arch", "'vit' is not one of"),
    ({"data": {"source": "cifar100"}}, "params.data.source", "'cifar100' is not one of"),
])
def test_a_bad_value_is_refused_naming_the_field_and_the_bound(schema: dict, params: dict,
                                                               field: str, why: str) -> None:
    with pytest.raises(ValidationError) as e:
        validate({"params": params}, schema, raise_on_error=True)
    assert f"field '{field}'" in str(e.value) and why in str(e.value), str(e.value)


def test_empty_fields_and_good_values_pass(schema: dict) -> None:
    validate({"params": {}}, schema, raise_on_error=True)
    # What the UI sends for dropdowns left empty (seen in the form's own validate call).
    validate({"params": {"arch": None, "loss": None, "data": {"channels": None}}}, schema,
             raise_on_error=True)
    validate({"params": {"epochs": 5, "arch": "dcgan", "data": {"image_size": 32}}}, schema,
             raise_on_error=True)


def test_the_run_id_of_a_prefect_run_contains_its_flow_run_name() -> None:
    rid = P.run_id_of_flow_run("gan-digits", "crimson-hawk", "3fa2b1c4-0000-4000-8000-000000000000")
    assert rid == "gan-digits-crimson-hawk-3fa2b1"
    odd = P.run_id_of_flow_run("my.model", "a name/with spaces!" + "x" * 80, "abcdef12-34")
    assert odd.startswith("my-model-a-name-with-spaces-") and odd.endswith("-abcdef")
    from gan.core.ids import is_run_id
    assert is_run_id(odd) and len(odd) <= 64
