"""The README's commands, run as written by a new user in a clean shell.

Every ```bash block of README.md is split into command lines; each line is either COVERED (run
here, in order, as written) or in NOT_RUN with the reason. A new README command fails
`test_every_readme_command_is_classified` until someone classifies it.

The covered commands run in a subprocess whose environment holds only PATH (the venv's bin dir
first, so `gan` and `python` are the venv's), HOME (a fresh temporary one) and GAN_HOME (the
test stack): no MLFLOW_*, PREFECT_*, AWS_* variable, as in a shell right after `make run`. Each
runs in a fresh temporary working folder, and must leave there only the files it names
(no `mlflow.db`, no `mlruns`). The ```python blocks run the same way (`python -c`).

The stack gets what the README assumes `make run` left: a model `gan-digits` with at least
three versions and a `champion` (a tiny conditional DCGAN, trained in seconds).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from gan.core.config import DataConfig
from gan.core.settings import Settings
from gan.data.prepare import prepare_arrays
from gan.registry import connect as registry_connect
from gan.registry import model_format as mm
from gan.registry import publish as registry
from gan.registry import run_log as mlflow_run
from gan.stack.auth import CONSUMER_USER, identity_env
from gan.train.loop import train_local
from gan.train.steps import unwrap

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

README = Path(__file__).resolve().parents[2] / "README.md"
VENV_BIN = Path(sys.executable).parent
MODEL = "gan-digits"  # the name the README's commands use

# Run as written, in this order; value: the files the command may leave in its folder.
COVERED: dict[str, set[str]] = {
    "gan stack status": set(),
    "gan sample --model models:/gan-digits@champion --n 64 --out grid.png": {"grid.png"},
    "gan sample --model models:/gan-digits/3 --n 10000 --npz samples.npz": {"samples.npz"},
    "M=models:/gan-digits@champion": set(),
    "gan sample --model $M --n 1000 --npz aug.npz": {"aug.npz"},
    "gan sample --model $M --n 16 --npz batch.npz": {"batch.npz"},
    "gan anomaly --model $M --input batch.npz --out scores.csv": {"batch.npz", "scores.csv"},
    "gan inpaint --model $M --input batch.npz --mask center --out grid.png --npz filled.npz":
        {"batch.npz", "grid.png", "filled.npz"},
}
# Commands that need the input another covered command writes (run together, in order).
NEEDS = {"gan anomaly": "gan sample --model $M --n 16 --npz batch.npz",
         "gan inpaint": "gan sample --model $M --n 16 --npz batch.npz"}

_RETRAIN = "trains for minutes; `gan retrain --smoke` and the flow are tests/integration/test_flow"
_SERVE = ("blocks until stopped; the stack's own `gan serve` runs it, and "
          "test_deploy checks the deployment and that stopping keeps its schedule")
_K8S = "needs docker / a Kubernetes cluster; the manifests are checked by test_k8s_manifests"
_BACKUP = ("writes to folders outside the test's; test_backup runs backup (folder and s3://), "
           "restore and `up` of the restored stack")
_CONSUMER = ("the default stack's address and ./.gan; test_auth pulls and samples the "
             "champion as the consumer identity on the session stack")
_ROTATE = ("would restart the session's stack or change its secrets under the other tests; "
           "test_auth_unit covers the files, test_auth the consumer and the refusals")
_RECIPES = ("the recipe comparison trains every candidate for about one CPU-minute per seed "
            "(minutes to an hour); tests/unit/test_recipes.py runs the same code on tiny epochs")
NOT_RUN: dict[str, str] = {
    ".venv/bin/python -m gan.tools.recipes compare --data digits --candidates "
    "default,default+diffaug --seeds 0,1,2 --epochs 45 --threads 1 --no-raw "
    "--out out/recipes-digits": _RECIPES,
    ".venv/bin/python -m gan.tools.recipes compare --data shapes --candidates "
    "default,default+diffaug --seeds 0,1,2 --epochs 20 --threads 1 --no-raw "
    "--out out/recipes-shapes": _RECIPES,
    ".venv/bin/python -m gan.tools.recipes compare --data shapes --candidates resnet "
    "--seeds 0,1,2 --epochs 2 --threads 1 --no-raw --out out/recipes-shapes": _RECIPES,
    "make run": "the whole quick start (install, stack, a full retraining); the stack here is "
                "the fixture's, with this file's commands run against it",
    "make test": "this test is part of it",
    "gan stack up": "the session fixture runs it (on free ports; a clean shell's `up` would "
                    "take the default ports)",
    "gan stack down": "would stop the session's stack; test_stack covers it",
    "gan stack backup /backups/gan-2026-11-30": _BACKUP,
    "gan stack backup s3://offsite/gan/2026-11-30": _BACKUP,
    "GAN_HOME=/srv/gan-new gan stack restore /backups/gan-2026-11-30": _BACKUP,
    "GAN_HOME=/srv/gan-new gan stack up": _BACKUP,
    "gan retrain": _RETRAIN,
    "gan retrain --smoke": _RETRAIN,
    "gan retrain --epochs 50 --lr-g 1e-4 --seed 3": _RETRAIN,
    "gan data upload mnist-idx/ s3://gan/raw/mnist/": "needs the MNIST IDX files (a download); "
        "`gan data upload` is tested in test_data_upload",
    "gan retrain --source mnist --uri s3://gan/raw/mnist/ --workers 2 --model-name gan-mnist":
        _RETRAIN + "; also needs the MNIST files in S3",
    "gan data make-shapes shapes/": "writes 3,000 files; `write_shapes` is tested in "
        "tests/unit/test_data_files.py and tests/integration/test_data_files_s3.py",
    "gan data make-painted painted/ --n 1800": "writes 1,800 files; `write_painted` and the "
        "command are tested in tests/unit/test_painted.py",
    "gan data make-shapes shapes/ --per-class 100": "as above (400 files); used by the two "
        "lines below",
    "gan retrain --source images --uri shapes/ --epochs 20 --model-name "
    "gan-shapes": _RETRAIN + "; tests/integration/test_retrain_images.py runs `gan retrain "
        "--source images` on the shapes PNGs (1 epoch)",
    "gan retrain --source images --uri shapes/ --arch resnet --model-name "
    "gan-shapes": _RETRAIN + "; the ResNet nets are tests/unit/test_models_rgb.py's",
    "gan data prepare --source images --uri s3://gan/raw/shapes/": "needs the shapes in the "
        "default stack's bucket; tests/integration/test_sources_retrain.py runs `gan data "
        "prepare` on image prefixes in the test stack's S3",
    "gan retrain --source images --uri s3://gan/raw/shapes/ --model-name gan-shapes":
        _RETRAIN + "; tests/integration/test_retrain_images.py runs it on an s3:// prefix",
    "gan retrain --source parquet --uri s3://gan/raw/shapes.parquet --model-name "
    "gan-shapes-pq": _RETRAIN + "; tests/integration/test_sources_retrain.py runs it on a "
        "Parquet file of the shapes in S3",
    "gan retrain --source cifar10 --uri https://www.cs.toronto.edu/~kriz/"
    "cifar-10-binary.tar.gz --model-name gan-cifar10": _RETRAIN + "; downloads 170 MB; "
        "tests/integration/test_sources_retrain.py runs `--source cifar10` on .bin files "
        "made by the test in S3",
    "gan data upload --recursive shapes/ s3://gan/raw/shapes/": "needs the folder above; the "
        "s3:// image prefix it makes is tested in tests/integration/test_data_files_s3.py",
    "gan retrain --run-id gan-digits-20260101T030000Z-1a2b3c": "resumes a run that does not "
                                                               "exist here; test_flow resumes",
    "gan serve": _SERVE,
    'gan serve --cron "0 */6 * * *"': _SERVE,
    "gan serve --no-schedule": _SERVE,
    "gan serve --name my-deployment": _SERVE,
    "gan serve --watch-every 60": _SERVE + "; test_trigger runs the watcher it serves",
    "gan retrain --source npz --uri unlabelled.npz --unconditional": _RETRAIN + "; "
        "test_label_free runs the flow on an unlabelled npz of digits",
    "gan retrain --force": _RETRAIN + "; test_run_semantics runs the flow without force",
    "gan retrain --run-id gan-digits-20260101T030000Z-1a2b3c --redecide": "re-decides a run "
        "that does not exist here; test_registry re-decides a version on the stack, "
        "test_decided_runs the flow's evaluate step with and without redecide",
    "export PREFECT_API_URL=http://127.0.0.1:4200/api": "the default stack's address; the "
        "Prefect CLI lines it is for are not run",
    'export PREFECT_API_AUTH_STRING="$(cat .gan/prefect-auth)"': "as above (./.gan); "
        "test_work_pool's worker gets the auth string from the environment",
    "prefect work-pool create gan-pool --type process": "test_work_pool runs these three "
        "lines on the session stack (the worker with --run-once)",
    "prefect deploy --all": "as above",
    "prefect worker start --pool gan-pool": "as above; blocks until stopped",
    'docker build -f infra/k8s/Dockerfile --build-arg GAN_CODE_VERSION="$(.venv/bin/python -m '
    'gan.registry.code_version)" -t <registry>/gan-retrain:0.1.0-ray2.60.0 .': _K8S + "; "
        "test_code_version checks the Dockerfile bakes the argument in and reads it back",
    'kubectl create secret generic gan-ray-token --from-literal=RAY_AUTH_TOKEN="$(openssl rand '
    '-hex 32)"': _K8S + "; test_k8s_manifests checks every Ray pod reads the token from it",
    "kubectl apply -f infra/k8s/gan-settings.example.yaml": _K8S,
    "kubectl apply -f infra/k8s/raycluster.yaml": _K8S,
    "prefect work-pool create gan-k8s --type kubernetes --base-job-template "
    "infra/k8s/prefect-base-job-template.json": _K8S,
    "kubectl apply -f infra/k8s/prefect-worker.yaml": _K8S,
    "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 MLFLOW_TRACKING_USERNAME=gan-consumer":
        _CONSUMER,
    """export MLFLOW_TRACKING_PASSWORD="$(python -c 'import json; print(json.load(open(".gan/"""
    """mlflow-consumer.json"))["password"])')\"""": _CONSUMER,
    """python -c 'import mlflow; print(mlflow.pyfunc.load_model("models:/gan-digits@champion", """
    """suppress_warnings=True).predict({"n": 4}).shape)'""": _CONSUMER,
    "gan stack down && rm .gan/prefect-auth && gan stack up": _ROTATE,
    "gan stack down && rm .gan/ray-token && gan stack up": _ROTATE,
    "rm .gan/mlflow-consumer.json && gan stack up": _ROTATE,
    "gan stack rotate-mlflow-admin": _ROTATE,
    "gan stack down && rm .gan/credentials.json .gan/s3-identities.json && gan stack up": _ROTATE,
}


def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), re.S | re.M)


def command_lines(block: str) -> list[str]:
    """Commands of a bash block, comments dropped, continuations joined, spaces normalised."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(shlex.join(words).replace("'", '"'))
    return out


def _normal(cmd: str) -> str:
    return shlex.join(shlex.split(cmd)).replace("'", '"')


def readme_commands() -> list[str]:
    return [c for b in readme_blocks("bash") for c in command_lines(b)]


def clean_env(settings: Settings, home: Path) -> dict[str, str]:
    """What a fresh shell after `make run` has: PATH with the venv, HOME, GAN_HOME. PYTHONPATH
    is passed on only when the caller set it (a checkout tested with another checkout's venv)."""
    env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
           "GAN_HOME": str(settings.gan_home.resolve()), "LANG": "C.UTF-8"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run_in_clean_shell(script: str, settings: Settings, tmp: Path, name: str,
                       extra_env: dict[str, str] | None = None
                       ) -> tuple[subprocess.CompletedProcess[str], Path]:
    cwd, home = tmp / f"{name}-cwd", tmp / f"{name}-home"
    cwd.mkdir()
    home.mkdir()
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd,
                       env=clean_env(settings, home) | (extra_env or {}),
                       capture_output=True, text=True,
                       timeout=600, stdin=subprocess.DEVNULL)
    return r, cwd


# --------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def gan_digits(stack: Settings) -> str:
    """`gan-digits` with >= 3 versions and a champion (a champion already there is kept)."""
    from gan.apps.studies.demo_models import tiny_recipe

    torch.set_num_threads(1)
    c = registry_connect.client(stack)
    versions = c.search_model_versions(f"name = '{MODEL}'") if _exists(c) else []
    if len(versions) < 3:
        model_cfg, train_cfg = tiny_recipe(conditional=True, epochs=2)
        state = train_local(prepare_arrays(DataConfig(limit=300)), model_cfg, train_cfg)
        exp_id = mlflow_run.experiment_id(c, "readme-test")
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=exp_id) as run:
            bundle = mm.write_bundle(Path(tmp) / "gan_generator", model_cfg, state.generator,
                                     unwrap(state.D))
            info = mm.log_bundle_model(registry.MODEL_ARTIFACT, bundle)
        if not _exists(c):
            c.create_registered_model(MODEL)
        for _ in range(3 - len(versions)):
            mv = c.create_model_version(MODEL, source=f"models:/{info.model_id}",
                                        run_id=run.info.run_id, model_id=info.model_id)
        if registry.champion(c, MODEL)[0] is None:
            c.set_registered_model_alias(MODEL, registry.CHAMPION, mv.version)
    return MODEL


def _exists(c: mlflow.MlflowClient) -> bool:
    return bool(c.search_registered_models(f"name = '{MODEL}'"))


# --------------------------------------------------------------------------- the tests


def test_every_readme_command_is_classified() -> None:
    cmds = readme_commands()
    assert cmds, "no ```bash block found in README.md"
    covered, not_run = {_normal(c) for c in COVERED}, {_normal(c) for c in NOT_RUN}
    unknown = [c for c in cmds if c not in covered | not_run]
    assert not unknown, ("README commands neither run by this test nor listed in NOT_RUN with "
                         f"a reason: {unknown}")
    stale = sorted((covered | not_run) - set(cmds))
    assert not stale, f"commands listed here but no longer in README.md: {stale}"


def test_readme_commands_work_in_a_clean_shell(gan_digits: str, stack: Settings,
                                               tmp_path: Path) -> None:
    """Each covered command (after the assignments and the inputs it needs), from its own new
    folder; it must succeed and leave only the files it names."""
    cmds = readme_commands()
    assignments = [c for c in cmds if re.fullmatch(r"[A-Za-z_]\w*=\S+", c)]
    failures = []
    for i, cmd in enumerate(c for c in cmds if _normal(c) in {_normal(k) for k in COVERED}):
        if cmd in assignments:
            continue
        before = [NEEDS[k] for k in NEEDS if cmd.startswith(k)]
        r, cwd = run_in_clean_shell("\n".join([*assignments, *before, cmd]), stack, tmp_path,
                                    f"cmd{i}")
        allowed = next(v for k, v in COVERED.items() if _normal(k) == cmd)
        left = sorted(p.name for p in cwd.iterdir())
        if r.returncode != 0:
            failures.append(f"$ {cmd}\n  exit {r.returncode}\n  {r.stderr.strip()[-1500:]}")
        elif set(left) - allowed:
            failures.append(f"$ {cmd}\n  left files it should not: {sorted(set(left) - allowed)}")
        elif cmd.startswith("gan anomaly"):
            failures += _anomaly_check(cwd / "scores.csv", cmd)
    assert not failures, "README commands failed in a clean shell:\n" + "\n".join(failures)


def _anomaly_check(csv_path: Path, cmd: str) -> list[str]:
    """Scores of the README's own batch must be informative, not all zero."""
    scores = np.loadtxt(csv_path, delimiter=",", skiprows=1, usecols=1, ndmin=1)
    if np.all(scores == 0):
        return [f"$ {cmd}\n  every score is 0.0: the search started from the batch's own "
                "latents"]
    return []


def test_readme_python_snippets_work_in_a_clean_shell(gan_digits: str, stack: Settings,
                                                      tmp_path: Path) -> None:
    blocks = readme_blocks("python")
    assert blocks, "no ```python block found in README.md"
    # A consumer application names its MLflow server and signs in as the stack's read-only
    # identity (the README's client snippet reads MLFLOW_TRACKING_URI, MLflow the
    # MLFLOW_TRACKING_USERNAME/PASSWORD); the other snippets find the stack without them.
    consumer = {"MLFLOW_TRACKING_URI": stack.require_mlflow()} | identity_env(
        stack.mlflow_consumer_file)
    assert consumer.get("MLFLOW_TRACKING_USERNAME") == CONSUMER_USER
    for i, code in enumerate(blocks):
        env = consumer if "os.environ" in code else None
        r, cwd = run_in_clean_shell(f"python -c {shlex.quote(code)}", stack, tmp_path, f"py{i}",
                                    env)
        assert r.returncode == 0, f"README python block {i} failed:\n{code}\n{r.stderr[-3000:]}"
        assert list(cwd.iterdir()) == [], f"block {i} left files: {list(cwd.iterdir())}"
