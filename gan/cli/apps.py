"""The `gan` commands of the generator applications: anomaly, inpaint and their evaluations.

What this module is: five typer command functions, registered on the main `gan` app by
`gan.cli.main` (`register(app)`), kept here so `gan/cli/main.py` stays small:

    gan anomaly       --model URI --input X.npz|s3://… --out scores.csv|s3://…
    gan inpaint       --model URI --input X.npz --mask center|boxes|mask.npy --out grid.png --npz
    gan augment-eval  --model URI [--quick]     table (1): real subset vs + generated samples
    gan anomaly-eval  [--model URI] [--quick]   table (2): one-class AUROC, AnoGAN vs baselines
    gan inpaint-eval  --model URI [--quick]     table (3): GAN vs mean vs nearest-neighbour fill

Each command parses, loads settings once, calls one library function and prints; long
searches draw a rich progress bar on stderr. Library errors become one red line, exit code 1
(2 for bad options and settings). Heavy imports (torch, MLflow) happen inside the commands, so
`gan --help` stays fast.

What it is not: no logic (see `gan.apps.anomaly`, `gan.apps.inpaint`, `gan.apps.studies.runs`).
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gan.cli.common import check_device, fail, load_settings, stdout
from gan.core.errors import explain
from gan.core.settings import SettingsError
from gan.io.storage import StorageError

MODEL_HELP = ("Model URI: models:/<name>@champion, models:/<name>/<version>, runs:/<run>/generator "
              "or a local MLflow model directory.")


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields the `progress(done, total)` callback."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _search_cfg(steps: int, lr: float, restarts: int, batch_size: int, seed: int) -> Any:
    from gan.apps.latent_search import SearchConfig  # lazy: torch

    try:
        return SearchConfig(steps=steps, lr=lr, restarts=restarts, batch_size=batch_size,
                            seed=seed)
    except ValidationError as e:
        raise fail(explain(e, style="flag", values=False), code=2) from None


def _app_errors() -> tuple[type[Exception], ...]:
    from gan.apps.inputs import InputError  # lazy: torch
    from gan.registry.model_format import BundleError  # lazy: MLflow, torch
    from gan.registry.publish import RegistryError  # lazy: MLflow, torch

    return (InputError, RegistryError, BundleError, SettingsError, StorageError, ValueError)


def anomaly(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    input: str = typer.Option(..., "--input", help="Images .npz (path or s3://): x (N, C, H, W) "
                              "float32 in [-1, 1] or uint8; optional y labels."),
    out: str = typer.Option(..., "--out", help="Scores CSV (path or s3://)."),
    steps: int = typer.Option(100, "--steps", help="Adam steps on z per image."),
    lr: float = typer.Option(0.1, "--lr", help="Adam learning rate on z."),
    restarts: int = typer.Option(1, "--restarts", help="Start latents per image (best kept)."),
    batch_size: int = typer.Option(512, "--batch-size", help="Images searched together."),
    lam: float = typer.Option(0.1, "--lambda", help="Weight of the discriminator feature loss "
                              "(AnoGAN: 0.1); 0 = pixel residual only."),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="Conditional models: "
                                "search the file's labels y (else every class)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the start latents."),
    device: str = typer.Option("cpu", "--device", help="torch device (cpu, cuda, cuda:1)."),
) -> None:
    """Score images by how poorly the generator explains them (AnoGAN): higher = anomalous."""
    check_device(device)
    cfg = _search_cfg(steps, lr, restarts, batch_size, seed)
    settings = load_settings()
    from gan.apps.anomaly import score_file  # lazy: torch, MLflow

    try:
        with progress_bar("latent search") as bar:
            summary = score_file(model, input, out, settings=settings, cfg=cfg, lam=lam,
                                 use_labels=labels, device=device, progress=bar)
    except _app_errors() as e:
        raise fail(str(e)) from None
    stdout().print(f"wrote {escape(summary['written'])}: {summary['n']} scores "
                        f"(mean {summary['score_mean']:.2f}, max {summary['score_max']:.2f})")


def inpaint(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    input: str = typer.Option(..., "--input", help="Images .npz (path or s3://), as for "
                              "`gan anomaly`."),
    mask: str = typer.Option("center", "--mask", help="center (middle half square), boxes "
                             "(2 random boxes per image) or a .npy/.npz mask file "
                             "(nonzero = missing; (H, W) or (N, H, W))."),
    out: str | None = typer.Option(None, "--out", help="PNG grid: original | masked | filled."),
    npz: str | None = typer.Option(None, "--npz", help="Filled images .npz: x, known, y."),
    steps: int = typer.Option(100, "--steps", help="Adam steps on z per image."),
    lr: float = typer.Option(0.1, "--lr", help="Adam learning rate on z."),
    restarts: int = typer.Option(1, "--restarts", help="Start latents per image (best kept)."),
    batch_size: int = typer.Option(512, "--batch-size", help="Candidates searched together."),
    weighting: str = typer.Option("plain", "--weighting", help="Contextual loss: plain L1 on "
                                  "known pixels, or weighted (Yeh et al.: near the hole)."),
    prior: float = typer.Option(0.003, "--prior", help="Weight of D's prior loss; 0 = none."),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="Conditional models: "
                                "search the file's labels y (else every class)."),
    mask_seed: int = typer.Option(0, "--mask-seed", help="Seed of --mask boxes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the start latents."),
    device: str = typer.Option("cpu", "--device", help="torch device (cpu, cuda, cuda:1)."),
) -> None:
    """Fill a masked region with the generator; known pixels are kept exactly."""
    check_device(device)
    if out is None and npz is None:
        raise fail("nothing to write: give --out (PNG grid) and/or --npz", code=2)
    if out is not None and Path(out).suffix.lower() != ".png":
        raise fail(f"--out {out}: the grid is written as PNG; use a .png name", code=2)
    if weighting not in ("plain", "weighted"):
        raise fail(f"--weighting must be plain or weighted, got {weighting!r}", code=2)
    cfg = _search_cfg(steps, lr, restarts, batch_size, seed)
    settings = load_settings()
    from gan.apps.inpaint import inpaint_file  # lazy: torch, MLflow

    try:
        with progress_bar("latent search") as bar:
            summary = inpaint_file(model, input, mask, out_png=out, out_npz=npz,
                                   settings=settings, cfg=cfg, use_labels=labels,
                                   weighting=weighting, prior_weight=prior, mask_seed=mask_seed,
                                   device=device, progress=bar)  # type: ignore[arg-type]
    except _app_errors() as e:
        raise fail(str(e)) from None
    for path in summary["written"]:
        stdout().print(f"wrote {escape(path)}: {summary['n']} images inpainted")


# --------------------------------------------------------------------------- evaluations


def command_line(name: str, opts: dict[str, Any]) -> str:
    """The command that reproduces a run: `gan <name>` plus the options that were set."""
    parts = ["gan", name]
    for flag, value in opts.items():
        if value is None or value is False or (value == 0 and not isinstance(value, bool)):
            continue
        parts += [flag] if value is True else [flag, shlex.quote(str(value))]
    return " ".join(parts)


def device_option(help: str = "torch device.") -> Any:
    return typer.Option("cpu", "--device", help=help)


def threads_option() -> Any:
    return typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default).")


def json_option() -> Any:
    return typer.Option(None, "--json", help="Also write the result here.")


def _study(name: str, title: str, opts: dict[str, Any],
           run: Callable[[Callable[[int, int], None] | None], dict[str, Any]], *, device: str,
           threads: int, json_out: str | None, searches: bool = True) -> None:
    """The end of every `*-eval` command: `run(progress)` the study (with a progress bar when
    it `searches` latents; library errors: one red line, exit 1), then print its table under
    the command line that reproduces it and write `--json`."""
    _threads(threads)
    try:
        with progress_bar("latent search") if searches else contextlib.nullcontext() as bar:
            res = run(bar)
    except _app_errors() as e:
        raise fail(str(e)) from None
    cmd = command_line(name, {**opts, "--device": device if device != "cpu" else None,
                              "--threads": threads})
    _report(res, title, cmd, json_out)


def _report(result: dict[str, Any], title: str, command: str, json_out: str | None) -> None:
    console = stdout()
    result = {"command": command, **result}
    console.print(f"\n## {escape(title)}\n\n`{escape(command)}`\n")
    for key in ("data_note",):
        if key in result:
            console.print(escape(result[key]) + "\n")
    console.print(escape(result["table"]))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2, default=float))
        console.print(f"\nwrote {escape(json_out)}")


def _echo(message: str) -> None:
    stdout().print(escape(message))


def _threads(n: int) -> None:
    """torch's CPU threads for this command (0: leave torch's default)."""
    if n:
        import torch  # lazy: torch takes seconds to import

        torch.set_num_threads(n)


def augment_eval(
    model: str = typer.Option(..., "--model", help=MODEL_HELP + " Conditional."),
    quick: bool = typer.Option(False, "--quick", help="Smaller run (3 seeds, 50 per class)."),
    seeds: int = typer.Option(0, "--seeds", min=0, help="Number of seeds (0: 3 quick, 5 full)."),
    k: int = typer.Option(0, "--k-per-class", min=0, help="Generated images per class "
                          "(0: 50 quick, 100 full)."),
    fraction: float = typer.Option(0.1, "--fraction", help="Share of the real train split."),
    device: str = device_option("torch device of the generator."),
    threads: int = threads_option(),
    json_out: str | None = json_option(),
) -> None:
    """Table (1): judge holdout accuracy on a small real subset with and without samples."""
    check_device(device)
    settings = load_settings()
    from gan.apps.studies.runs import run_augment  # lazy: torch, MLflow

    _study("augment-eval", "Augmentation: judge holdout accuracy",
           {"--model": model, "--quick": quick, "--seeds": seeds, "--k-per-class": k,
            "--fraction": fraction},
           lambda _: run_augment(model, settings=settings, quick=quick,
                                 seeds=list(range(seeds)) or None, k_per_class=k or None,
                                 fraction=fraction, device=device, echo=_echo),
           device=device, threads=threads, json_out=json_out, searches=False)


def anomaly_eval(
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP + " Optional: a "
                                     "conditional generator searched with the normal class as "
                                     "label, instead of training one GAN per class."),
    quick: bool = typer.Option(False, "--quick", help="Smaller run (3 classes, short training)."),
    classes: str | None = typer.Option(None, "--classes", help="Normal classes, e.g. 0,3,8."),
    epochs: int = typer.Option(0, "--epochs", min=0, help="GAN epochs per class (0: default)."),
    steps: int = typer.Option(0, "--steps", min=0, help="Search steps (0: default)."),
    test_limit: int = typer.Option(0, "--test-limit", min=0, help="Stratified subset of the "
                                   "holdout, the same for every class (0: 120 quick, all full)."),
    encoder_epochs: int | None = typer.Option(None, "--encoder-epochs", min=0, help="f-AnoGAN "
                                              "encoder epochs (default 10 quick, 40 full; 0: "
                                              "no f-AnoGAN column)."),
    device: str = device_option(),
    threads: int = threads_option(),
    json_out: str | None = json_option(),
) -> None:
    """Table (2): one-class AUROC per digit, AnoGAN vs PCA and kNN on the same split."""
    check_device(device)
    try:
        picked = [int(c) for c in classes.split(",")] if classes else None
    except ValueError:
        raise fail(f"--classes must be integers separated by commas, got {classes!r}",
                        code=2) from None
    settings = load_settings() if model else None
    from gan.apps.studies.runs import run_anomaly  # lazy: torch, MLflow

    _study("anomaly-eval", "Anomaly detection: one-class AUROC",
           {"--model": model, "--quick": quick, "--classes": classes, "--epochs": epochs,
            "--steps": steps, "--test-limit": test_limit,
            "--encoder-epochs": None if encoder_epochs is None else str(encoder_epochs)},
           lambda bar: run_anomaly(model, settings=settings, quick=quick, classes=picked,
                                   epochs=epochs or None, steps=steps or None,
                                   test_limit=test_limit or None, encoder_epochs=encoder_epochs,
                                   device=device, progress=bar, echo=_echo),
           device=device, threads=threads, json_out=json_out)


def inpaint_eval(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    quick: bool = typer.Option(False, "--quick", help="Smaller run (60 images, 50 steps)."),
    mask: str = typer.Option("center", "--mask", help="center, boxes or a mask file."),
    n: int = typer.Option(0, "--n", min=0, help="Holdout images (0: 60 quick, all full)."),
    steps: int = typer.Option(0, "--steps", min=0, help="Search steps (0: default)."),
    device: str = device_option(),
    threads: int = threads_option(),
    json_out: str | None = json_option(),
) -> None:
    """Table (3): MSE / PSNR on the hole and judge accuracy, GAN vs mean vs NN fill."""
    check_device(device)
    settings = load_settings()
    from gan.apps.studies.runs import run_inpaint  # lazy: torch, MLflow

    _study("inpaint-eval", "Inpainting",
           {"--model": model, "--quick": quick, "--mask": mask, "--n": n, "--steps": steps},
           lambda bar: run_inpaint(model, settings=settings, quick=quick, mask=mask,
                                   n=n or None, steps=steps or None, device=device,
                                   progress=bar, echo=_echo),
           device=device, threads=threads, json_out=json_out)


def register(app: typer.Typer) -> None:
    """Add the five commands to the `gan` app."""
    app.command()(anomaly)
    app.command()(inpaint)
    app.command("augment-eval")(augment_eval)
    app.command("anomaly-eval")(anomaly_eval)
    app.command("inpaint-eval")(inpaint_eval)
