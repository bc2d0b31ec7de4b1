"""The flow's parameters without services: CLI option mapping, validation messages, run ids,
the Prefect parameter schema (the UI form), the cache-key fingerprint and the summary text."""

from __future__ import annotations

import http.server
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer.main
from pydantic import BaseModel
from typer.testing import CliRunner

from flows import params as P
from flows import summary
from gan.cli.main import app
from gan.core.config import PRESETS, DataConfig, RetrainParams
from gan.core.records import DatasetRef, GateDecision, ModelRef, Report, TrainedRef
from gan.data.fingerprint import source_fingerprint
from gan.io.storage import StorageError
from gan.registry.run_log import SECRET_KEY_RE

RUN_ID_RE = re.compile(RetrainParams.model_fields["run_id"].metadata[0].pattern)


def _field_exists(model: type[BaseModel], dotted: str) -> bool:
    *parents, leaf = dotted.split(".")
    for p in parents:
        model = model.model_fields[p].annotation  # type: ignore[assignment]
    return leaf in model.model_fields


# --------------------------------------------------------------------------- CLI options


def test_every_cli_option_maps_to_a_retrain_params_field():
    for option, field in P.OPTION_FIELDS.items():
        assert _field_exists(RetrainParams, field), (option, field)
    cmd = typer.main.get_command(app).commands["retrain"]  # type: ignore[attr-defined]
    names = {p.name for p in cmd.params}
    assert names == set(P.OPTION_FIELDS) | {"smoke"}


def test_given_options_override_the_preset_and_others_keep_it():
    p = P.params_from_options(smoke=True, epochs=3, lr_g=1e-3, workers=2, gpu=False,
                              model_name="m.v1", max_class_kl=2.5, source="digits")
    assert p.preset == "smoke" and p.registry.model_name == "m.v1" and p.gate.max_class_kl == 2.5
    data, model, train, ev = P.resolve(p)
    assert (train.epochs, train.lr_g, train.num_workers, train.use_gpu) == (3, 1e-3, 2, False)
    smoke = PRESETS["smoke"]
    assert train.batch_size == smoke["train"]["batch_size"]  # not given: the preset's
    assert data.limit == smoke["data"]["limit"] and model.arch == "mlp"
    assert ev.judge_epochs == smoke["eval"]["judge_epochs"]


@pytest.mark.parametrize(("options", "names"), [
    ({"epochs": -1}, "epochs: Input should be greater than or equal to 1 (got -1)"),
    ({"lr_d": 0.0}, "lr_d: Input should be greater than 0"),
    ({"batch_size": 0}, "batch_size"),
    ({"arch": "vit"}, "arch: Input should be 'mlp', 'dcgan', 'dcgan-up', 'dcgan-deep', "
                      "'resnet' or 'r3gan' (got 'vit')"),
    ({"source": "npz"}, "data: data.uri is required for source 'npz'"),
    ({"model_name": "bad name"}, "registry.model_name: model name 'bad name' is not accepted"),
    ({"run_id": "has space"}, "run_id: String should match pattern"),
    ({"fid_margin": -1.0}, "gate.fid_margin"),
])
def test_bad_values_name_the_field(options, names):
    with pytest.raises(P.ParamsError) as e:
        P.params_from_options(**options)
    assert str(e.value).startswith("invalid retrain parameters: ")
    assert names in str(e.value)


def test_cross_field_error_names_the_section():
    p = RetrainParams.model_validate({"data": {"image_size": 30}})  # dcgan needs % 4 == 0
    with pytest.raises(P.ParamsError, match=r"model: model.image_size 30 must be divisible by 4"):
        P.resolve(p)


def test_smoke_and_another_preset_conflict():
    with pytest.raises(P.ParamsError, match="--smoke means --preset smoke"):
        P.params_from_options(smoke=True, preset="seed")
    assert P.params_from_options(smoke=True, preset="smoke").preset == "smoke"


def test_cli_rejects_bad_values_before_any_work(settings_env):
    r = CliRunner().invoke(app, ["retrain", "--epochs", "-1"])
    assert r.exit_code == 2
    assert "epochs: Input should be greater than or equal to 1 (got -1)" in r.output
    r = CliRunner().invoke(app, ["retrain", "--smoke", "--lr-g", "2"])
    assert r.exit_code == 2 and "lr_g: Input should be less than or equal to 1" in r.output


def test_cli_without_prefect_names_the_variable(settings_env):
    r = CliRunner().invoke(app, ["retrain", "--smoke"])
    assert r.exit_code == 2 and "PREFECT_API_URL is unset" in r.output


# --------------------------------------------------------------------------- JSON round trip


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_params_survive_the_json_round_trip_of_the_ui(preset):
    """The UI and the API send every field; the preset must still win where none was given."""
    p = RetrainParams(preset=preset, epochs=2, eval={"seed": 7})
    q = RetrainParams.model_validate(p.model_dump(mode="json"))
    assert q.resolve() == p.resolve()
    assert q.resolve()[3].seed == 7


# --------------------------------------------------------------------------- run ids


def test_run_id_names_model_time_and_a_unique_suffix():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    a, b = P.new_run_id("gan-digits", now), P.new_run_id("gan-digits", now)
    assert a.startswith("gan-digits-20260102T030405Z-") and a != b
    assert RUN_ID_RE.match(a)
    long = P.new_run_id("My.Model_" + "x" * 200, now)
    assert RUN_ID_RE.match(long) and len(long) <= 64 and long.startswith("My-Model_x")


# --------------------------------------------------------------------------- UI form


def test_parameter_schema_is_a_clean_form():
    from prefect.utilities.callables import parameter_schema

    from flows.retrain import retrain

    schema = parameter_schema(retrain.fn).model_dump()
    assert list(schema["properties"]) == ["params"]
    defs = schema["definitions"]
    form = defs["RetrainParams"]
    assert form["additionalProperties"] is False
    for name, prop in form["properties"].items():
        assert prop.get("description"), f"RetrainParams.{name} has no description"
    for model in ("DataConfig", "EvalConfig", "GateConfig", "RegistryConfig"):
        for name, prop in defs[model]["properties"].items():
            assert prop.get("description"), f"{model}.{name} has no description"
    assert form["properties"]["preset"]["enum"] == ["default", "seed", "r3gan", "smoke"]
    epochs = form["properties"]["epochs"]  # a plain integer input (no null toggle)
    assert (epochs["minimum"], epochs["maximum"]) == (1, 10_000)
    assert defs["DataConfig"]["properties"]["source"]["enum"][0] == "digits"
    names = {n for d in defs.values() for n in d["properties"]} | set(schema["properties"])
    assert not [n for n in names if SECRET_KEY_RE.search(n) or "settings" in n], names


# --------------------------------------------------------------------------- cache key


def test_fingerprint_follows_the_file_content(tmp_path: Path):
    f = tmp_path / "d.npz"
    f.write_bytes(b"one")
    cfg = DataConfig(source="npz", uri=str(f))
    first = source_fingerprint(cfg)
    assert source_fingerprint(cfg) == first
    f.write_bytes(b"other content")
    os.utime(f, ns=(1, 1))
    assert source_fingerprint(cfg) != first
    assert source_fingerprint(DataConfig()) == source_fingerprint(DataConfig())  # digits


def test_unreadable_source_is_never_cached(tmp_path: Path):
    cfg = DataConfig(source="mnist", uri=str(tmp_path / "missing"))
    a, b = source_fingerprint(cfg), source_fingerprint(cfg)
    assert a.startswith("uncached:") and a != b


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_http_source_uses_last_modified(tmp_path: Path):
    (tmp_path / "x.npz").write_bytes(b"abc")
    handler = lambda *a, **k: _Quiet(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = DataConfig(source="npz", uri=f"http://127.0.0.1:{server.server_address[1]}/x.npz")
        first = source_fingerprint(cfg)
        assert not first.startswith("uncached:") and source_fingerprint(cfg) == first
        os.utime(tmp_path / "x.npz", (1_000_000, 1_000_000))
        assert source_fingerprint(cfg) != first
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- retries, stages


def _raised(exc: Exception, cause: Exception | None = None) -> Exception:
    try:
        raise exc from cause
    except Exception as e:
        return e


def test_only_storage_errors_are_retried():
    from prefect.states import Failed

    from flows.retrain import retry_on_storage_error
    from gan.data.validate import DataError
    from gan.io.storage import ObjectMissing

    def retried(exc: Exception) -> bool:
        return retry_on_storage_error(None, None, Failed(data=exc))

    assert retried(_raised(StorageError("S3 endpoint unreachable")))
    assert retried(_raised(DataError("s3://b/x.npz: cannot read"), StorageError("timeout")))
    assert not retried(_raised(DataError("x.npz: not a readable .npz file")))
    assert not retried(_raised(ValueError("bad")))
    # a missing object is the user's error (data not uploaded), not an outage: no retry
    assert not retried(_raised(DataError("s3://b/raw/x.gz does not exist"),
                               ObjectMissing("s3://b/raw/x.gz does not exist")))


def test_stage_message_names_stage_and_reason():
    from flows.retrain import RetrainFailed, stage

    with pytest.raises(RetrainFailed, match=r"^train failed: training diverged at step 3: NaN$"):
        with stage("train"):
            raise RuntimeError("training diverged at step 3: NaN")


# --------------------------------------------------------------------------- summary


def _records(champion: bool):
    dataset = DatasetRef(name="digits", version="abc123", uri="s3://gan/datasets/digits/abc123/",
                         source="digits", n_train=1437, n_holdout=360, num_classes=10,
                         image_size=28)
    trained = TrainedRef(run_id="r1", checkpoint_uri="s3://gan/ray/r1/c/checkpoint.pt",
                         dataset_version="abc123", model_cfg={}, train_cfg={},
                         epochs_completed=3, global_step=60, images_per_s=1234.5)
    report = Report(run_id="r1", dataset_version="abc123",
                    metrics={"fid": 1.5, "class_kl": 0.01, "precision": 0.8},
                    floors={"fid": 0.2, "class_kl": 0.001}, ceilings={}, class_hist=[0.1] * 10,
                    classes_covered=10, judge_accuracy=0.97, n_samples=1000,
                    report_uri="s3://gan/runs/r1/eval/report.json",
                    markdown_uri="s3://gan/runs/r1/eval/report.md")
    decision = GateDecision(promote=champion, reasons=["PASS: a", "FAIL: FID 1.5 < 1.2"],
                            champion_version="2", champion_fid=1.2)
    model = ModelRef(name="gan-digits", version="3", uri="models:/gan-digits/3",
                     champion=champion, decision=decision, mlflow_run_id="f00",
                     mlflow_run_url="http://m:5000/#/experiments/1/runs/f00")
    return dataset, trained, report, model


def test_the_run_summary_says_when_the_data_was_streamed() -> None:
    dataset, trained, report, model = _records(champion=False)
    links = summary.mlflow_links("http://m:5000", model)

    def text(t: TrainedRef) -> str:
        return summary.summary_markdown(run_id="r1", dataset=dataset, trained=t, report=report,
                                        model=model, champion={"fid": 1.2}, links=links)

    assert trained.data_path == "memory" and "streamed" not in text(trained)
    streamed = trained.model_copy(update={"data_path": "stream"})
    assert "1234 images/s, data streamed from its shards" in text(streamed)


def test_summary_has_table_decision_links_and_samples():
    dataset, trained, report, model = _records(champion=False)
    links = summary.mlflow_links("http://m:5000", model)
    assert links.model_version == "http://m:5000/#/models/gan-digits/versions/3"
    assert links.samples_png == ("http://m:5000/get-artifact?path=evaluation%2Fsamples.png"
                                 "&run_uuid=f00")
    text = summary.summary_markdown(run_id="r1", dataset=dataset, trained=trained,
                                    report=report, model=model, champion={"fid": 1.2},
                                    links=links)
    assert "| metric | candidate | champion v2 | real data |" in text
    assert "| FID ↓ | 1.5 | 1.2 | 0.2 |" in text
    assert "**not promoted**" in text and "- FAIL: FID 1.5 < 1.2" in text
    assert f"]({links.model_version})" in text and f"]({links.run})" in text
    assert f"![samples]({links.samples_png})" in text
    assert "Standard FID" not in text  # off by default
    with_inception = report.model_copy(update={
        "metrics": {**report.metrics, "fid_inception": 41.5},
        "spread": {"fid_inception": 1.25}, "floors": {**report.floors, "fid_inception": 3.5}})
    text = summary.summary_markdown(run_id="r1", dataset=dataset, trained=trained,
                                    report=with_inception, model=model, champion={"fid": 1.2},
                                    links=links)
    assert ("Standard FID (Inception-v3, for comparison with published numbers; does not "
            "decide promotion): 41.5 ± 1.25, real data 3.5") in text


def test_artifact_keys_are_prefect_safe():
    assert summary.artifact_key("My.Model_v2", "report") == "my-model-v2-report"
    assert summary.mlflow_links("file:///tmp/mlruns", _records(True)[3]).samples_png == ""
