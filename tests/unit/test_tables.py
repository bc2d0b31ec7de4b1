"""gan.core.tables.markdown_table: the one markdown table renderer."""

from __future__ import annotations

import pytest

from gan.core.tables import markdown_table


def test_header_rule_and_rows_with_empty_cells() -> None:
    assert markdown_table(["a", "b"], [["1", ""], ["", 2]]) == (
        "| a | b |\n|---|---|\n| 1 | |\n| | 2 |")


def test_alignment_and_no_rows() -> None:
    assert markdown_table(["a", "b", "c"], [], align=["right", None, "center"]) == (
        "| a | b | c |\n|---:|---|:---:|")
    with pytest.raises(ValueError, match="align names 1 columns, the header 2"):
        markdown_table(["a", "b"], [], align=["left"])
