"""The data-change trigger (issue 15, point 8): `watch-source` starts the retrain deployment
only when the source's fingerprint changed, remembers each readable fingerprint, and is served
by `gan serve` next to the retrain deployment (schedule off with the retrain schedule).

Pure logic: `check_and_start` with recording stand-ins for `run_deployment` and the Prefect
Variable; `flows.deploy.serve` with `prefect.serve` replaced by a recorder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import prefect
import pytest

from flows import deploy
from flows.trigger import check_and_start, variable_name
from gan.core.config import DataConfig, RetrainParams
from gan.data.fingerprint import fingerprint_change, source_fingerprint

PARAMS = RetrainParams(preset="smoke")


def _check(last: str | None, current: str) -> tuple[str | None, list, list]:
    starts: list[tuple[dict[str, Any], str]] = []
    remembered: list[str] = []
    got = check_and_start(PARAMS, "retrain/gan-retrain", current=current, last_seen=last,
                          start=lambda p, k: starts.append((p, k)) or "run-1",
                          remember=remembered.append)
    return got, starts, remembered


def test_new_data_in_the_source_starts_a_run(tmp_path: Path) -> None:
    src = tmp_path / "data.npz"
    np.savez(src, x=np.zeros((30, 8, 8), np.uint8))
    cfg = DataConfig(source="npz", uri=str(src))
    before = source_fingerprint(cfg)
    assert _check(before, before) == (None, [], [])  # unchanged: nothing
    np.savez(src, x=np.ones((40, 8, 8), np.uint8))  # new data in the source
    after = source_fingerprint(cfg)
    assert after != before and fingerprint_change(before, after)
    got, starts, remembered = _check(before, after)
    assert got == "run-1" and remembered == [{"fingerprint": after, "changes": 1}]
    assert starts == [({"params": PARAMS.model_dump(mode="json", exclude_none=True)},
                       f"retrain/gan-retrain:1:{after}")]  # one run per change, even if two watch


def test_first_look_and_unreadable_source_start_nothing(tmp_path: Path) -> None:
    assert _check(None, "abc") == (None, [], [{"fingerprint": "abc", "changes": 0}])  # baseline
    missing = source_fingerprint(DataConfig(source="npz", uri=str(tmp_path / "gone.npz")))
    assert missing.startswith("uncached:")
    assert _check("abc", missing) == (None, [], [])  # not a change, and not remembered


def test_the_variable_written_before_the_change_count_still_reads() -> None:
    """A Variable holding a bare fingerprint (written before the count) is change 0."""
    got, starts, remembered = _check("abc", "def")
    assert got == "run-1" and starts[0][1] == "retrain/gan-retrain:1:def"
    assert remembered == [{"fingerprint": "def", "changes": 1}]
    seen = {"fingerprint": "def", "changes": 4}
    starts2: list[tuple[dict[str, Any], str]] = []
    check_and_start(PARAMS, "d", current="ghi", last_seen=seen,
                    start=lambda p, k: starts2.append((p, k)) or "r", remember=lambda v: None)
    assert starts2[0][1] == "d:5:ghi"


def test_variable_name_per_deployment_and_source() -> None:
    a = variable_name("retrain/gan-retrain", DataConfig())
    assert a.startswith("gan_source_") and a.replace("_", "").isalnum()
    assert a == variable_name("retrain/gan-retrain", DataConfig())
    assert a != variable_name("retrain/other", DataConfig())
    assert a != variable_name("retrain/gan-retrain", DataConfig(limit=200))


@pytest.mark.parametrize("cron, watch, expect", [
    ("0 3 * * *", 300.0, 300.0), ("0 3 * * *", None, None), (None, 300.0, None)])
def test_gan_serve_serves_the_trigger_next_to_retrain(monkeypatch: pytest.MonkeyPatch,
                                                     cron, watch, expect) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(prefect, "serve", lambda *deps, **kw: seen.update(deps=deps, **kw))
    deploy.serve(name="nightly", cron=cron, watch_every_s=watch)
    retrain, watcher = seen["deps"]
    assert (retrain.name, watcher.name) == ("nightly", "nightly-watch") and seen["limit"] == 1
    assert watcher.entrypoint == "flows.trigger.watch_source"
    assert watcher.parameters == {"deployment": "retrain/nightly"}
    interval = [s.schedule.interval.total_seconds() for s in watcher.schedules]
    assert interval == ([expect] if expect else [])
    assert len(retrain.schedules) == (1 if cron else 0)


class Server:
    """Prefect's side of `run_deployment(idempotency_key=...)`: a key seen before returns the
    run it started then (nothing new starts), as the server does; and the Variable."""

    def __init__(self) -> None:
        self.runs: dict[str, str] = {}  # idempotency key → flow run id
        self.variable: Any = None

    def start(self, parameters: dict[str, Any], key: str) -> str:
        return self.runs.setdefault(key, f"run-{len(self.runs) + 1}")

    def remember(self, value: Any) -> None:
        self.variable = value


def test_a_repeated_state_starts_a_run_each_time_it_changes() -> None:
    """A→B→A→B: three changes after the first look, three runs (issue 23, item 7). A key of
    deployment and fingerprint alone made the second B return the first B's run."""
    server = Server()
    for fp in ("A", "B", "A", "B", "B"):
        check_and_start(PARAMS, "retrain/gan-retrain", current=fp, last_seen=server.variable,
                        start=server.start, remember=server.remember)
    assert sorted(server.runs.values()) == ["run-1", "run-2", "run-3"]
    assert len(set(server.runs)) == 3 and all(k.startswith("retrain/gan-retrain:")
                                              for k in server.runs)
