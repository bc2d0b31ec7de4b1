"""The run id: the one name of everything a retraining run writes.

What this module is: its pattern (`RUN_ID_PATTERN`, `RUN_ID_RE`, `RUN_ID_MAX_LEN`) — the one
definition `RetrainParams.run_id`, the Ray driver, the MLflow run log and `flows.params.new_run_id`
check against — and `is_run_id`.

What it is not: no id generation (`flows.params.new_run_id`), no error type (each caller raises
its own).
"""

from __future__ import annotations

import re

RUN_ID_MAX_LEN = 64
# 1-64 letters, digits, '_' or '-', starting with a letter or digit: a safe S3 key segment, Ray
# run name and MLflow tag value.
RUN_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{RUN_ID_MAX_LEN - 1}}}$"
RUN_ID_RE = re.compile(RUN_ID_PATTERN)


def is_run_id(run_id: str | None) -> bool:
    """True when `run_id` matches the run-id pattern (None and '' do not)."""
    return bool(RUN_ID_RE.match(run_id or ""))
