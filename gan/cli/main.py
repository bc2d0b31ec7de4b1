"""The `gan` command (typer): a thin front over the library.

What this module is: argument parsing, `Settings.load()` once per command, and printing. Each
command is one small function calling one library entry point; errors from the library
(`SettingsError`, `StackError`, ...) become one red line and exit code 1 (2 for settings).

What it is not: no logic that a test or a flow would need; that lives in `gan.*`.
To add a command (`retrain`, `serve`, `sample`, `bench`), write one `@app.command()` function
below the stack section that loads settings, calls the library and prints the result.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
from collections.abc import Callable
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.deploy import DeployError, check_cron
from flows.deploy import serve as serve_deployment
from flows.params import (
    RETRAIN_OPTIONS,
    ParamsError,
    RetrainOption,
    new_run_id,
    option_help,
    option_type,
    params_from_options,
    resolve,
)
from flows.prefect_setup import use_api
from flows.summary import mlflow_links
from gan.cli import apps as apps_cli
from gan.cli.common import check_device, fail, load_settings, stdout
from gan.core.records import Unchanged
from gan.core.settings import MLFLOW_WORKERS_MAX, Settings, SettingsError
from gan.data.painted import write_painted
from gan.data.shapes import CLASSES as SHAPE_CLASSES
from gan.data.shapes import write_shapes
from gan.io.storage import StorageError
from gan.stack import backup as backup_lib
from gan.stack import supervisor as stack_lib

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="GAN retraining pipeline: local stack, retraining, serving, sampling.")
stack_app = typer.Typer(no_args_is_help=True,
                        help="The local stack: SeaweedFS (S3), MLflow server, Prefect server.")
app.add_typer(stack_app, name="stack")


# --------------------------------------------------------------------------- stack


@stack_app.command("up")
def stack_up(
    timeout: float = typer.Option(180.0, min=1, help="Seconds to wait for all services' health."),
) -> None:
    """Start SeaweedFS, MLflow and Prefect (what is not running yet) and wait for health."""
    settings = load_settings()
    console = stdout()
    try:
        st = stack_lib.up(settings, timeout_s=timeout, echo=lambda m: console.print(escape(m)))
    except stack_lib.StackError as e:
        raise fail(str(e)) from None
    _print_status(st, console)


@stack_app.command("down")
def stack_down(
    grace: float = typer.Option(15.0, min=0, help="Seconds between SIGTERM and SIGKILL."),
) -> None:
    """Stop the processes `gan stack up` started; data in GAN_HOME is kept."""
    settings = load_settings()
    console = stdout()
    try:
        stack_lib.down(settings, grace_s=grace, echo=lambda m: console.print(escape(m)))
    except stack_lib.StackError as e:
        raise fail(str(e)) from None


@stack_app.command("rotate-mlflow-admin")
def stack_rotate_mlflow_admin() -> None:
    """Give the local MLflow's admin identity a new password (server and GAN_HOME file)."""
    settings = load_settings()
    console = stdout()
    try:
        stack_lib.rotate_mlflow_admin(settings, echo=lambda m: console.print(escape(m)))
    except stack_lib.StackError as e:
        raise fail(str(e)) from None


@stack_app.command("status")
def stack_status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
) -> None:
    """Each service's URL, health and pid; the credentials FILE (never its values)."""
    settings = load_settings()
    try:
        st = stack_lib.status(settings)
    except stack_lib.StackError as e:
        raise fail(str(e)) from None
    if not settings.state_file.exists() and not any(
            s["pid"] or s["external"] for s in st["services"].values()):
        # Not a stopped stack (that one has stack.json and shows its services as down): none was
        # ever started here, typically a shell in another folder without GAN_HOME.
        raise fail(f"no local stack in GAN_HOME={st['gan_home']}: run `gan stack up`, or set "
                    "GAN_HOME to the folder of a running stack")
    if as_json:
        typer.echo(json.dumps(st, indent=2))
    else:
        _print_status(st, stdout())


@stack_app.command("backup")
def stack_backup(
    dest: str = typer.Argument(..., help="A new (absent or empty) folder, or an s3:// prefix of "
                               "another store (GAN_BACKUP_S3_ENDPOINT_URL, GAN_BACKUP_AWS_*)."),
) -> None:
    """Copy the stack (running or not): MLflow and Prefect databases, the bucket, the S3 keys."""
    settings = load_settings()
    console = stdout()
    try:
        backup_lib.backup(settings, dest, echo=lambda m: console.print(escape(m)))
    except (stack_lib.StackError, StorageError, ValueError) as e:
        raise fail(str(e)) from None


@stack_app.command("restore")
def stack_restore(
    src: str = typer.Argument(..., help="A backup folder or s3:// prefix (`gan stack backup`)."),
    timeout: float = typer.Option(180.0, min=1, help="Seconds to wait for SeaweedFS's health."),
) -> None:
    """Restore a backup into an empty or absent GAN_HOME; then run `gan stack up`."""
    settings = load_settings()
    console = stdout()
    try:
        backup_lib.restore(settings, src, timeout_s=timeout,
                           echo=lambda m: console.print(escape(m)))
    except (stack_lib.StackError, StorageError, ValueError) as e:
        raise fail(str(e)) from None


def _print_status(st: dict[str, Any], console: Console) -> None:
    table = Table(title=f"gan stack ({escape(st['gan_home'])})", title_justify="left")
    for col in ("service", "url", "healthy", "pid"):
        table.add_column(col)
    for s in st["services"].values():
        ok = "[green]yes[/green]" if s["healthy"] else "[red]no[/red]"
        pid = str(s["pid"]) if s["pid"] else ("external" if s["external"] else "-")
        table.add_row(escape(s["title"]), escape(s["url"]), ok, pid)
    table.add_row("prefect UI", escape(st["prefect_ui_url"]), "", "")
    table.add_row("ray", escape(st["ray"]), "", "")
    console.print(table)
    console.print(f"bucket: {escape(st['bucket'])}")
    creds = st["credentials_file"] or "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (environment)"
    console.print(f"S3 credentials: {escape(creds)}")
    if st.get("mlflow_consumer_file"):
        console.print("MLflow read-only consumer identity (username, password): "
                      f"{escape(st['mlflow_consumer_file'])}")


# --------------------------------------------------------------------------- other commands
# retrain / serve / sample / bench: one function each, added by their issues.


def _retrain_options(command: Callable[..., None],
                     rows: tuple[RetrainOption, ...] = RETRAIN_OPTIONS) -> Callable[..., None]:
    """Give `command(**options)` `gan retrain`'s options, one per row of
    `flows.params.RETRAIN_OPTIONS` (or of `rows`): flag and help from the row, type from the
    RetrainParams field, default None (the preset's value; a field-less flag: False)."""
    params = []
    for opt in rows:
        kind = option_type(opt)
        default = False if opt.field is None else None
        params.append(inspect.Parameter(
            opt.name, inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(default, opt.flags, help=option_help(opt)),
            annotation=kind if opt.field is None else kind | None))
    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}  # what typer reads too
    return command


@app.command()
@_retrain_options
def retrain(**options: Any) -> None:
    """Run the retraining flow now, recorded on the configured Prefect server."""
    try:  # every value is checked (pydantic, naming the field) before anything starts
        params = params_from_options(**options)
        resolve(params)  # cross-field rules (e.g. dcgan needs image_size % 4 == 0)
    except ParamsError as e:
        raise fail(str(e), code=2) from None
    settings = load_settings()
    # A cluster's GPUs are not ours to see; the stack's Ray head runs on this machine.
    if params.use_gpu and (not settings.ray_address or settings.ray_from_stack):
        check_device("cuda", "--gpu:")
    params = params.model_copy(update={"run_id": params.run_id or new_run_id(params.model_name)})
    console = stdout()
    try:
        api = use_api(settings)  # before anything reads Prefect's settings
    except SettingsError as e:
        raise fail(str(e), code=2) from None
    console.print(f"retraining run {params.run_id} (preset {params.preset}, data "
                  f"{escape(params.data.source)}), publishes to models:/"
                  f"{escape(params.model_name)}, Prefect API {escape(api)}")
    from flows.retrain import retrain as retrain_flow  # lazy: Prefect, torch, Ray, MLflow

    # Named by the run id before it starts running: the runs list shows what the CLI printed.
    named = retrain_flow.with_options(flow_run_name=params.run_id)
    state = named(params, return_state=True)
    if not state.is_completed():
        why = (state.message or state.type.value).removeprefix(
            "Flow run encountered an exception: ")
        raise fail(f"retraining run {params.run_id} {state.type.value.lower()}: {why}")
    run_url = f"{api.removesuffix('/api')}/runs/flow-run/{state.state_details.flow_run_id}"
    result = state.result()
    if isinstance(result, Unchanged):
        console.print(f"{escape(result.reason)}: no training, no new version "
                      f"(models:/{escape(result.model_name)}@champion stays v"
                      f"{result.champion_version}; --force trains anyway)")
        console.print(f"Prefect flow run: {escape(run_url)}")
        return
    _print_model(result, settings, console, run_url)


def _print_model(model: Any, settings: Settings, console: Console, flow_run_url: str) -> None:
    """The registered version, the gate's verdict and where to look."""
    links = mlflow_links(settings.mlflow_tracking_uri, model)
    verdict = ("[green]champion[/green] (promoted)" if model.champion
               else "[yellow]not promoted[/yellow] (stays challenger)")
    console.print(f"registered {escape(model.uri)}: {verdict}")
    for reason in model.decision.reasons:
        console.print(f"  gate {escape(reason)}")
    if links.run:
        console.print(f"MLflow run: {escape(links.run)}")
    if links.model_version:
        console.print(f"model version: {escape(links.model_version)}")
    console.print(f"Prefect flow run: {escape(flow_run_url)}")
    console.print(f"model URI: {escape(model.uri)}  (champion: models:/{escape(model.name)}"
                  "@champion)")


@app.command()
def serve(
    cron: str = typer.Option("0 3 * * *", "--cron", help="Cron schedule of the deployment "
                             "(UTC); default nightly at 03:00."),
    no_schedule: bool = typer.Option(False, "--no-schedule", help="No schedule: runs start "
                                     "only from the Prefect UI's Run button or the API."),
    name: str = typer.Option("gan-retrain", "--name", help="Deployment name "
                             "(retrain/<name> in the UI)."),
    watch_every: float = typer.Option(300.0, "--watch-every", min=0.0, help="Seconds between "
                                      "checks of the data source (watch-source/<name>-watch "
                                      "starts a run when it changes); 0 = no checks."),
) -> None:
    """Serve the retrain deployment until stopped: scheduled and UI-started runs execute here,
    next to the data-change trigger."""
    settings = load_settings()
    try:
        use_api(settings)  # before anything imports Prefect, which reads it once
    except SettingsError as e:
        raise fail(str(e), code=2) from None
    try:
        schedule = None if no_schedule else check_cron(cron)
    except DeployError as e:
        raise fail(str(e), code=2) from None
    serve_deployment(name=name, cron=schedule, watch_every_s=watch_every or None)


@app.command()
def sample(
    model: str = typer.Option(..., "--model", help="Model URI: models:/<name>@champion, "
                              "models:/<name>/<version>, runs:/<run>/generator or a model dir."),
    n: int = typer.Option(64, "--n", help="Number of samples, 1 to 100000."),
    out: str | None = typer.Option(None, "--out", help="Write a PNG grid of the samples here."),
    npz: str | None = typer.Option(None, "--npz", help="Write raw samples here: x float32 "
                                    "(N, C, H, W) in [-1, 1], y int64 labels (conditional)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the latents."),
    label: int | None = typer.Option(None, "--label", help="Only this class (conditional "
                                     "models); default: every class equally often."),
    device: str = typer.Option("cpu", "--device", help="torch device to sample on."),
) -> None:
    """Draw samples from a published generator: a PNG grid and/or an .npz for augmentation."""
    # Imported here: MLflow and torch take seconds to import, which `gan --help` should not pay.
    from gan.apps import sampling  # lazy: torch
    from gan.registry.model_format import BundleError  # lazy: MLflow, torch
    from gan.registry.publish import RegistryError  # lazy: MLflow, torch

    try:  # the request is checked before anything is fetched
        sampling.check_request(n, out=out, npz=npz, label=label)
    except sampling.SamplingError as e:
        raise fail(str(e), code=2) from None
    check_device(device)
    settings = load_settings()
    try:
        summary = sampling.sample_to_files(model, n, out=out, npz=npz, seed=seed, label=label,
                                           settings=settings, device=device)
    except (sampling.SamplingError, RegistryError, BundleError, SettingsError) as e:
        raise fail(str(e)) from None
    console = stdout()
    for path in summary["written"]:  # type: ignore[union-attr]
        console.print(f"wrote {escape(path)}: {n} samples of {escape(model)} (seed {seed})")


@app.command()
def modes(
    model: str = typer.Option(..., "--model", help="models:/<name>@<alias>, models:/<name>/"
                              "<version>, runs:/..., a model dir, or a training checkpoint "
                              "(checkpoint.pt, or the folder holding it, as `python -m "
                              "gan.tools.recipes` writes)."),
    n: int = typer.Option(26_000, "--n", help="Samples drawn (1000 to 1000000; the papers use "
                          "26000)."),
    real_n: int | None = typer.Option(None, "--real-n", help="Real stacked images measured "
                                      "alike; default: --n."),
    seed: int = typer.Option(0, "--seed", help="Seed of the latents."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
) -> None:
    """Mode coverage on stacked digits (docs/modes.md): a digit classifier reads each channel
    of --n samples; prints modes covered of 1000 and KL(generated ‖ uniform), beside the real
    data's own figures under the same classifier."""
    from gan.eval.modes import ModesError  # lazy: torch
    from gan.registry.model_format import BundleError  # lazy: MLflow, torch
    from gan.registry.publish import RegistryError  # lazy: MLflow, torch
    from gan.tools.modes import check_n, modes_report  # lazy: torch

    try:  # the request is checked before anything is loaded or trained
        check_n(n)
        check_n(real_n or n, "--real-n")
    except ModesError as e:
        raise fail(str(e), code=2) from None
    cache = load_settings().gan_home / "modes-classifier"
    try:
        report = modes_report(model, n=n, seed=seed, real_n=real_n, cache_dir=cache)
    except (ModesError, RegistryError, BundleError, SettingsError) as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(report))
        return
    g, r, c = report["generated"], report["real"], report["classifier"]
    console = stdout()
    console.print(f"{escape(model)}: {g['modes_covered']} of 1000 modes, KL(generated ‖ "
                  f"uniform) {g['modes_kl']:.4f} ({g['n']} samples, seed {seed})")
    console.print(f"real stacked digits: {r['modes_covered']} of 1000 modes, KL "
                  f"{r['modes_kl']:.4f} ({r['n']} images of glyphs the classifier never saw)")
    console.print(f"digit classifier: held-out accuracy {c['heldout_accuracy']:.4f}; "
                  f"{report['seconds']:.0f} s")


@app.command()
def bench(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per model."),
    model: list[str] = typer.Option(["seed", "default"], "--model",
                                    help="Preset to measure (repeatable): seed, default."),
    images: int = typer.Option(4096, "--images", min=256, help="Training images per epoch."),
    epochs: int = typer.Option(4, "--epochs", min=2, help="Epochs per variant; the first is "
                               "warm-up."),
    pull_only: bool = typer.Option(False, "--pull-only", help="Only the client's side: load a "
                                   "generator and draw 10,000 images (pull_10k_s)."),
    pull_model: str | None = typer.Option(
        None, "--pull-model", help="Model to pull: models:/<name>@<alias> (the configured "
        "MLflow) or a local model directory; default: the default preset's G saved locally."),
    pull_python: str | None = typer.Option(
        None, "--pull-python", help="The client's Python (e.g. a venv with only torch and "
        "mlflow); default: this one."),
    orchestration: bool = typer.Option(
        True, "--orchestration/--no-orchestration",
        help="Also run one smoke retrain flow on the stack and report orchestration_s (flow "
             "wall time minus training and evaluation compute); needs `gan stack up`."),
    load: str | None = typer.Option(
        None, "--load", help="Only the consumer load: models:/<name>@<alias> pulled in a loop "
        "by --load-consumers processes against a temporary MLflow server of the stack (same "
        "store) per --load-workers count; p50/p99 load latency and loads/s per count."),
    load_workers: str = typer.Option("1,2,4", "--load-workers",
                                     help="MLflow server worker counts to compare, e.g. 1,2,4."),
    load_consumers: int = typer.Option(16, "--load-consumers", min=1, max=64,
                                       help="Consumer processes for --load."),
    load_seconds: float = typer.Option(30.0, "--load-seconds", min=5.0, max=600.0,
                                       help="Seconds of load per worker count."),
) -> None:
    """Images/s of the training step (bare PyTorch, in-process loop, Ray Train 1 and 2 workers),
    the orchestration overhead of one flow run on the stack, and the seconds a client takes to
    load a generator and draw 10,000 images. With --load: only the consumer load per MLflow
    worker count."""
    if load is not None:
        _load_bench(load, load_workers, load_consumers, load_seconds, as_json)
        return
    from gan.tools.pull_bench import consumer_identity, pull_bench  # lazy: torch, MLflow

    unknown = [m for m in model if m not in ("seed", "default")]
    if unknown:
        raise fail(f"--model {unknown[0]!r}: choose seed or default", code=2)
    tracking, identity = None, None
    if pull_model and pull_model.startswith(("models:/", "runs:/")):
        settings = load_settings()
        tracking = settings.mlflow_tracking_uri
        identity = consumer_identity(settings)  # the stack's read-only consumer, as apps do
    elif pull_model and not (Path(pull_model) / "MLmodel").is_file():
        raise fail(f"--pull-model {pull_model!r}: not models:/..., runs:/... or a local MLflow "
                   "model directory", code=2)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    results: list[dict[str, Any]] = []
    # stdout carries the figures only (one JSON object per line with --json): what the flow,
    # MLflow ("View run ...") and Ray print while measuring goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        if not pull_only:
            from gan.tools.bench import BenchConfig, run_bench  # lazy: torch, Ray

            overhead: dict[str, Any] = {}
            if orchestration:
                overhead = _orchestration(load_settings(), err)
            results = run_bench(model, BenchConfig(images=images, epochs=epochs),
                                echo=lambda m: err.print(escape(m)))
            results = [r | overhead for r in results]
        err.print("pulling a generator in a fresh process: load + 10,000 images ...")
        try:
            pull = pull_bench(pull_model, tracking_uri=tracking, python=pull_python,
                              identity=identity)
        except RuntimeError as e:
            raise fail(str(e)) from None
    if as_json:
        for r in results:
            typer.echo(json.dumps(r))
        typer.echo(json.dumps({"model": "pull", **pull}))
    else:
        if results:
            from gan.tools.bench import format_table  # lazy: as above

            typer.echo(format_table(results))
        typer.echo(f"pull: load + {pull['pull_images']:,} images in {pull['pull_10k_s']:.2f} s "
                   f"(warm {pull['pull_10k_warm_s']:.2f} s, {pull['pull_threads']} threads; "
                   f"{pull['pull_model']}"
                   + (f" as {pull['pull_identity']})" if pull["pull_identity"] else ")"))


def _load_bench(uri: str, workers: str, consumers: int, seconds: float, as_json: bool) -> None:
    """`gan bench --load`: `gan.tools.load_bench.bench_workers`, one row per worker count."""
    from gan.tools.load_bench import bench_workers, format_rows  # lazy: spawns MLflow, torch

    if not uri.startswith("models:/"):
        raise fail(f"--load {uri!r}: give a registered model, models:/<name>@<alias>", code=2)
    try:
        counts = tuple(int(w) for w in workers.split(","))
    except ValueError:
        counts = ()
    if not counts or any(not 1 <= w <= MLFLOW_WORKERS_MAX for w in counts):
        raise fail(f"--load-workers {workers!r}: comma-separated counts between 1 and "
                   f"{MLFLOW_WORKERS_MAX}, e.g. 1,2,4", code=2)
    settings = load_settings()
    try:
        settings.require_mlflow()
        settings.require_s3()
    except SettingsError as e:
        raise fail(str(e)) from None
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        rows = bench_workers(settings, uri, workers=counts, consumers=consumers,
                             duration_s=seconds, echo=lambda m: err.print(escape(m)))
    except RuntimeError as e:
        raise fail(str(e)) from None
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
    else:
        typer.echo(format_rows(rows))


def _orchestration(settings: Settings, err: Console) -> dict[str, Any]:
    """`flows.orchestration`'s figures, or orchestration_s null (and why) without a stack."""
    from flows.orchestration import OrchestrationError, orchestration_overhead  # lazy: Prefect

    try:
        settings.require_prefect()
        settings.require_mlflow()
        settings.require_s3()
    except SettingsError as e:
        err.print(f"orchestration_s: not measured ({escape(str(e))})")
        return {"orchestration_s": None}
    err.print("one smoke retrain flow on the stack, for orchestration_s ...")
    try:
        return orchestration_overhead(settings)
    except OrchestrationError as e:
        raise fail(str(e)) from None


data_app = typer.Typer(no_args_is_help=True, help="Data in the stack's object storage.")
app.add_typer(data_app, name="data")


@data_app.command("upload")
def data_upload(
    folder: str = typer.Argument(..., help="Local folder: every file directly in it is sent."),
    prefix: str = typer.Argument(..., help="s3://<bucket>/<prefix>/ to put the files under."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Also the files in its "
                                   "sub-folders, keeping their relative paths (an image "
                                   "folder with one sub-folder per class)."),
) -> None:
    """Copy a folder's files into object storage, e.g. MNIST's IDX files for `--source mnist`."""
    from gan.io.storage import Storage, StorageError  # lazy: boto3 only for commands that use S3

    root = Path(folder)
    files = sorted(p for p in (root.rglob("*") if recursive else root.glob("*")) if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not prefix.startswith("s3://") or not files:
        why = "PREFIX must be an s3:// URI" if files else f"no files in folder {folder}"
        raise fail(why, code=2)
    settings = load_settings()
    console = stdout()
    try:
        storage = Storage.from_settings(settings)
        for p in files:
            uri = f"{prefix.rstrip('/')}/{p.relative_to(root).as_posix()}"
            storage.put_file(uri, str(p))
            console.print(f"uploaded {escape(str(p))} → {escape(uri)}")
    except (StorageError, SettingsError) as e:
        raise fail(str(e)) from None


def _prepare_options(command: Callable[..., None]) -> Callable[..., None]:
    """`gan data prepare`'s options: `gan retrain`'s preset, data and judge (eval.*) rows, and
    --no-judge."""
    rows = tuple(o for o in RETRAIN_OPTIONS if o.name in ("preset", "smoke")
                 or (o.field or "").startswith(("data.", "eval.")))
    command = _retrain_options(command, rows)
    sig = command.__signature__  # type: ignore[attr-defined]
    no_judge = inspect.Parameter(
        "no_judge", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
        default=typer.Option(False, "--no-judge", help="Store the dataset version only, "
                             "without building and checking its judge."))
    command.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[*sig.parameters.values(), no_judge])
    command.__annotations__["no_judge"] = bool
    return command


@data_app.command("prepare")
@_prepare_options
def data_prepare(**options: Any) -> None:
    """Read, check and decode a source and store its dataset version in the bucket, then build
    (or load from its cache) and check the version's judge, as `gan retrain` does before
    training, without training: a bad file or a judge that cannot see the data is named in
    seconds or minutes, and the retrain that follows reuses both."""
    # lazy: torch, Pillow and boto3 load for this command only (the CLI starts fast)
    from gan.data.prepare import prepare
    from gan.data.validate import DataError
    from gan.eval.judge_ladder import JudgeError, describe, prepare_judge
    from gan.io.storage import Storage

    no_judge = options.pop("no_judge")
    try:
        data, _, _, eval_cfg = resolve(params_from_options(**options))
    except ParamsError as e:
        raise fail(str(e), code=2) from None
    settings = load_settings()
    try:
        storage = Storage.from_settings(settings)
        ref = prepare(data, storage)
    except (DataError, StorageError, SettingsError) as e:
        raise fail(str(e)) from None
    labels = (f"{ref.num_classes} classes ({', '.join(ref.class_names)})" if ref.class_names
              and ref.labelled else f"{ref.num_classes} classes" if ref.labelled
              else "unlabelled")
    console = stdout()
    console.print(f"dataset {escape(ref.name)} version {ref.version} "
                  f"{'already stored (reused)' if ref.reused else 'stored'} at {escape(ref.uri)}")
    console.print(f"  {ref.n_train} train + {ref.n_holdout} holdout images, {ref.channels}×"
                  f"{ref.image_size}×{ref.image_size}, {escape(labels)}"
                  + (f", {ref.n_skipped} bad files skipped" if ref.n_skipped else "")
                  + (f", {ref.n_duplicates_dropped} duplicate images dropped"
                     if ref.n_duplicates_dropped else "")
                  + (f", {ref.n_label_conflicts_dropped} images with two labels dropped"
                     if ref.n_label_conflicts_dropped else ""))
    if no_judge:
        return
    console.print("building its judge (as `gan retrain` does before training) ...")
    try:
        judge = prepare_judge(storage, ref, eval_cfg)
    except (JudgeError, DataError, StorageError) as e:
        raise fail(str(e)) from None
    console.print(f"judge: {escape(describe(judge))}")
    for skipped in judge.passed_over:
        console.print(f"  passed over: {escape(skipped)}")


@data_app.command("make-shapes")
def data_make_shapes(
    out_dir: str = typer.Argument(..., help="New or empty folder to write the PNG files to."),
    per_class: int = typer.Option(750, min=1, max=100_000, help="Images per class."),
    seed: int = typer.Option(0, min=0, help="Seed of the drawing."),
    flat: bool = typer.Option(False, "--flat", help="All files in OUT_DIR itself: unlabelled."),
) -> None:
    """Write the bundled RGB set: 32×32 coloured shapes on textured backgrounds, as PNG files
    in one sub-folder per class (circle, cross, square, triangle), for `--source images`."""
    try:
        paths = write_shapes(out_dir, per_class, seed, flat=flat)
    except FileExistsError as e:
        raise fail(str(e), code=2) from None
    layout = "flat (unlabelled)" if flat else f"one folder per class ({', '.join(SHAPE_CLASSES)})"
    stdout().print(f"wrote {len(paths)} PNG files to {escape(out_dir)}, {layout}")


@data_app.command("make-painted")
def data_make_painted(
    out_dir: str = typer.Argument(..., help="New or empty folder to write the PNG files to."),
    n: int = typer.Option(1800, min=1, max=1_000_000, help="Images in all."),
    seed: int = typer.Option(0, min=0, help="Seed of the painting."),
    flat: bool = typer.Option(False, "--flat", help="All files in OUT_DIR itself: unlabelled."),
    reference: bool = typer.Option(
        False, "--reference", help="Draw from the other half of the glyphs (and another paint "
        "stream): a set disjoint from the run sets, e.g. ten times bigger, to train a "
        "reference classifier on."),
) -> None:
    """Write a colour set: 32×32 digits (scikit-learn's bundled glyphs) painted in random
    colours on random coloured textures, as PNG files in one sub-folder per digit (0 … 9), for
    `--source images`. Colour says nothing about the class; the digit's shape does."""
    try:
        paths = write_painted(out_dir, n, seed, flat=flat,
                              part="reference" if reference else "run")
    except FileExistsError as e:
        raise fail(str(e), code=2) from None
    layout = "flat (unlabelled)" if flat else "one folder per digit (0 … 9)"
    stdout().print(f"wrote {len(paths)} PNG files to {escape(out_dir)}, {layout}"
                   + (" (reference glyphs)" if reference else ""))


@data_app.command("make-stacked")
def data_make_stacked(
    out_dir: str = typer.Argument(..., help="New or empty folder to write the PNG files to."),
    n: int = typer.Option(25_600, min=1, max=1_000_000, help="Images in all."),
    seed: int = typer.Option(0, min=0, help="Seed of the digits and glyphs drawn."),
) -> None:
    """Write stacked digits: 28×28 RGB images whose R, G and B channels are three bundled
    digits (1,000 modes), as flat PNG files named <mode>-<i>.png (unlabelled), for
    `--source images`; `--source stacked-digits` makes the same kind of set in memory."""
    from gan.data.stacked import write_stacked  # lazy: the resize imports torch

    try:
        paths = write_stacked(out_dir, n, seed)
    except FileExistsError as e:
        raise fail(str(e), code=2) from None
    stdout().print(f"wrote {len(paths)} PNG files to {escape(out_dir)}, flat (unlabelled)")


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(pkg_version("gan-retrain"))


# anomaly / inpaint / augment-eval / anomaly-eval / inpaint-eval live in gan.cli.apps.
apps_cli.register(app)
