"""`gan bench --json` on the session stack, as a user runs it: every stdout line is one JSON
object (nothing the flow or MLflow prints in between), with `orchestration_s` measured by one
smoke retrain flow on the stack, the Ray 1/2-worker figures and the 2-rank probe
(`ranks_2_nosync_images_per_s`, `allreduce_ms_per_step`). No timing is asserted, only that
each figure was measured."""

from __future__ import annotations

import json

import pytest

from gan.core.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def test_bench_json_has_orchestration_and_the_exchange(stack: Settings, gan_cli) -> None:
    r = gan_cli.run("bench", "--json", "--model", "seed", "--images", "512", "--epochs", "2",
                timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    rows = [json.loads(line) for line in r.stdout.splitlines()]  # fails on any non-JSON line
    assert [row["model"] for row in rows] == ["seed", "pull"]
    seed = rows[0]
    assert isinstance(seed["orchestration_s"], float) and seed["orchestration_s"] >= 0
    assert seed["flow_wall_s"] >= seed["orchestration_s"]
    assert seed["orchestration_preset"] == "smoke"
    for key in ("inprocess_images_per_s", "ray_1_images_per_s", "ray_2_images_per_s",
                "ranks_2_nosync_images_per_s", "allreduce_ms_per_step", "ray_2_vs_inprocess",
                "ranks_2_nosync_vs_inprocess"):
        assert isinstance(seed[key], float) and seed[key] > 0, (key, seed.get(key))
