"""`gan.tools.load_bench` without services: the figures of a load, the temporary MLflow server
it compares worker counts on, and `gan bench --load`'s refusals. The load itself runs in
`tests/reliability/test_6_load.py`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gan.cli.main import app
from gan.stack import services
from gan.tools.load_bench import LoadResult, format_rows, run_load, server_service


def _load(t: float, load_s: float) -> dict:
    return {"t": t, "load_s": load_s, "consumer": 0}


def test_summary_percentiles_errors_and_rate_over_the_window() -> None:
    loads = [_load(i * 0.1, 0.1 * (i + 1)) for i in range(100)]  # load_s 0.1 .. 10.0
    loads += [{"t": 3.0, "error": "MlflowException: boom", "consumer": 1}]
    res = LoadResult(loads, consumers=2, window_s=5.0)
    s = res.summary()
    assert s["loads"] == 100 and s["errors"] == 1 and len(res.errors) == 1
    assert s["load_p50_s"] == pytest.approx(5.05) and s["load_p99_s"] == pytest.approx(9.901)
    assert s["load_max_s"] == pytest.approx(10.0)
    assert s["warm_load_p50_s"] == pytest.approx(5.1)  # without consumer 0's first (0.1 s)
    assert s["loads_per_s"] == pytest.approx(50 / 5.0)  # only loads started inside the window
    row = format_rows([{"mlflow_workers": 4, **s}]).splitlines()[-1]
    assert row == "| 4 | 100 | 1 | 5.050 | 9.901 | 5.100 | 9.902 | 10.00 |"


def test_consumers_never_read_a_half_written_go(tmp_path: Path, monkeypatch) -> None:
    """The start signal is published whole even when its writer stalls between creating the
    file and writing it (CI: the retrain thread held the GIL there and all 16 consumers read
    '' and crashed). A real consumer process; its loads fail fast on an empty file store."""
    real_write = Path.write_text

    def stalled_write(self: Path, text: str, *args, **kwargs) -> int:
        if self.name.startswith("go"):
            self.touch()  # created, still empty, while a consumer polls for it
            time.sleep(1.0)
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", stalled_write)
    env = dict(os.environ, MLFLOW_TRACKING_URI=(tmp_path / "mlruns").as_uri())
    res = run_load("models:/absent@champion", env=env, workdir=tmp_path / "load", consumers=1,
                   stop=lambda elapsed: elapsed >= 3.0, max_s=30.0)
    assert res.exit_codes == [0], res.stderr_tails
    assert res.loads and all(r["t"] >= 0 and "error" in r for r in res.loads)


def test_the_compared_server_is_the_stacks_with_other_workers_and_port(settings_env) -> None:
    settings_env.set(GAN_S3_ENDPOINT_URL="http://127.0.0.1:20000", AWS_ACCESS_KEY_ID="K",
                     AWS_SECRET_ACCESS_KEY="SECRET", GAN_MLFLOW_PORT="21000")
    s = settings_env.load()
    (stack_ml,) = [x for x in services.plan(s, ("K", "SECRET")) if x.name == "mlflow"]
    svc = server_service(s, 4, 23456)
    argv = list(svc.argv)
    assert argv[argv.index("--workers") + 1] == "4" and argv[argv.index("--port") + 1] == "23456"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    for flag in ("--backend-store-uri", "--artifacts-destination"):
        assert argv[argv.index(flag) + 1] == stack_ml.argv[stack_ml.argv.index(flag) + 1]
    assert svc.url == "http://127.0.0.1:23456" and svc.env == stack_ml.env


def test_an_external_mlflow_is_not_benched(settings_env) -> None:
    settings_env.set(GAN_S3_ENDPOINT_URL="http://127.0.0.1:20000", AWS_ACCESS_KEY_ID="K",
                     AWS_SECRET_ACCESS_KEY="S", MLFLOW_TRACKING_URI="https://mlflow.example")
    with pytest.raises(RuntimeError, match="not this machine's stack"):
        server_service(settings_env.load(), 2, 23456)


@pytest.mark.parametrize(("args", "text"), [
    (["--load", "gan-digits@champion"], "give a registered model"),
    (["--load", "models:/m@champion", "--load-workers", "0,2"], "between 1 and 32"),
    (["--load", "models:/m@champion", "--load-workers", "two"], "comma-separated counts"),
])
def test_bench_load_refuses_bad_options(settings_env, args: list[str], text: str) -> None:
    r = CliRunner().invoke(app, ["bench", *args])
    assert r.exit_code == 2 and text in r.output and "Traceback" not in r.output, r.output
