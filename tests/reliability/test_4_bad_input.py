"""Bad input: each is refused with a clear error naming the problem, before any work, and
nothing is written.

Parameters are checked without any service (the checks run before any connection): the
Prefect form/API validation of the flow's parameter, `gan retrain`'s options, and the CLI in a
subprocess with an empty GAN_HOME (no stack at all: reaching a service would be a different
error). Dataset files are refused by `gan.data.prepare.prepare` against the real bucket, which stays
untouched. `gan sample` refuses a silly `--n` with no stack, and an unknown model URI against
the real MLflow, writing no file either way.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from faultlib import GAN_EXE, unique

from flows.params import ParamsError, params_from_options, resolve
from gan.core.config import DataConfig
from gan.core.settings import Settings
from gan.data.prepare import prepare
from gan.data.validate import DataError
from gan.io.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SCRUB = ("GAN_HOME", "GAN_S3_ENDPOINT_URL", "GAN_S3_PORT", "GAN_MLFLOW_PORT", "GAN_PREFECT_PORT",
         "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI", "PREFECT_API_URL",
         "RAY_ADDRESS")


def _no_stack_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    return env | {"GAN_HOME": str(home)}


def _gan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GAN_EXE, *args], capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------- parameters

BAD_PARAMS = [
    ({"epochs": -1}, "params.epochs: Input should be greater than or equal to 1"),
    ({"arch": "vit"}, "params.arch: Input should be 'mlp', 'dcgan', "
                      "'dcgan-up', 'dcgan-deep', 'resnet' or 'r3gan'"),
    ({"batch_size": 0}, "params.batch_size: Input should be greater than or equal to 1"),
    ({"registry": {"model_name": "my model/v2"}}, "model name 'my model/v2' is not accepted"),
    ({"registry": {"model_name": "x" * 129}}, "is not accepted: use 1-128"),
    ({"data": {"source": "imagenet"}}, "params.data.source: Input should be"),
    ({"run_id": "../../etc"}, "params.run_id: String should match pattern"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS,
                         ids=[m.split(":")[0][:30] for _, m in BAD_PARAMS])
def test_malformed_flow_parameters_are_rejected_by_the_form(params, message) -> None:
    """User sees (Prefect UI / API / `run_deployment`): "Flow run received invalid parameters:
    - params.epochs: Input should be greater than or equal to 1"; no flow run is created."""
    from prefect.exceptions import ParameterTypeError

    from flows.retrain import retrain

    with pytest.raises(ParameterTypeError, match="invalid parameters") as e:
        retrain.validate_parameters({"params": params})
    assert message in str(e.value)


@pytest.mark.parametrize(("options", "message"), [
    ({"epochs": -1}, "epochs: Input should be greater than or equal to 1 (got -1)"),
    ({"arch": "vit"}, "arch: Input should be 'mlp', 'dcgan', 'dcgan-up', 'dcgan-deep', "
                      "'resnet' or 'r3gan' (got 'vit')"),
    ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1 (got 0)"),
    ({"model_name": "-leading-dash"}, "model name '-leading-dash' is not accepted"),
])
def test_malformed_cli_options_are_rejected(options, message) -> None:
    """User sees: `gan retrain --epochs -1` → "invalid retrain parameters: epochs: ..."."""
    with pytest.raises(ParamsError, match="invalid retrain parameters") as e:
        params_from_options(**options)
    assert message in str(e.value)


def test_cross_field_rules_are_checked_before_work() -> None:
    """User sees: "invalid retrain parameters: model: model.image_size 30 must be divisible by
    4 for dcgan" (each field valid alone, not together)."""
    params = params_from_options(arch="dcgan")
    bad = params.model_copy(update={"data": DataConfig(image_size=30)})
    with pytest.raises(ParamsError, match="image_size 30 must be divisible by 4"):
        resolve(bad)


def test_gan_retrain_refuses_bad_options_before_touching_anything(tmp_path: Path) -> None:
    """User sees: exit code 2 and "invalid retrain parameters: epochs: Input should be greater
    than or equal to 1 (got -1); batch_size: ... (got 0)"; no stack needed, nothing created."""
    home = tmp_path / "home"
    r = _gan("retrain", "--smoke", "--epochs", "-1", "--batch-size", "0",
             env=_no_stack_env(home))
    assert r.returncode == 2, r.stdout + r.stderr
    out = " ".join((r.stdout + r.stderr).split())
    assert "invalid retrain parameters" in out and "epochs" in out and "batch_size" in out
    assert not home.exists()  # no state, no connection attempt, no run id minted


# --------------------------------------------------------------------------- datasets


def _idx(data: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in data.shape)
    return gzip.compress(header + data.astype(np.uint8).tobytes())


def _mnist_dir(root: Path, *, n_train: int = 40, n_test: int = 20, **broken: bytes) -> Path:
    """The four IDX files of a small MNIST-like set; `broken` replaces files by name."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (n_train, 28, 28)), 0x803),
        "train-labels-idx1-ubyte.gz": _idx(np.arange(n_train) % 10, 0x801),
        "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (n_test, 28, 28)), 0x803),
        "t10k-labels-idx1-ubyte.gz": _idx(np.arange(n_test) % 10, 0x801),
    }
    files.update(broken)
    for fname, blob in files.items():
        (root / fname).write_bytes(blob)
    return root


def _npz(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    np.savez(path, **({"x": x} | ({"y": y} if y is not None else {})))
    return path


def _bad_sources(tmp: Path) -> list[tuple[str, DataConfig, str]]:
    good_images = _idx(np.zeros((40, 28, 28)), 0x803)
    rng = np.random.default_rng(1)
    x = rng.random((50, 8, 8)).astype(np.float32)
    nan_x = x.copy()
    nan_x[7, 3, 3] = np.nan
    cases = [
        ("truncated", "mnist", _mnist_dir(tmp / "trunc", **{
            "train-images-idx3-ubyte.gz": good_images[: len(good_images) // 2]}),
         "train-images-idx3-ubyte.gz: truncated or corrupt gzip stream"),
        ("wrong magic", "mnist", _mnist_dir(tmp / "magic", **{
            "train-labels-idx1-ubyte.gz": _idx(np.arange(40) % 10, 0x803)}),
         "train-labels-idx1-ubyte.gz: wrong IDX magic number 0x00000803, expected 0x00000801"),
        ("count mismatch", "mnist", _mnist_dir(tmp / "count", **{
            "t10k-labels-idx1-ubyte.gz": _idx(np.arange(19) % 10, 0x801)}),
         "t10k-images-idx3-ubyte.gz: 20 images but t10k-labels-idx1-ubyte.gz has 19 labels"),
        ("label out of range", "mnist", _mnist_dir(tmp / "range", **{
            "train-labels-idx1-ubyte.gz": _idx(np.full(40, 12), 0x801)}),
         "labels must lie in [0, 9], found [0, 12]"),
        ("pixels out of range", "npz", _npz(tmp / "big.npz", x * 255.0),
         "float images must lie in [-1, 1], found"),
        ("NaN", "npz", _npz(tmp / "nan.npz", nan_x, np.arange(50) % 5),
         "1 NaN/inf pixel values (first in image 7)"),
        ("mismatched npz", "npz", _npz(tmp / "mism.npz", x, np.arange(49) % 5),
         "labels must be (N,) = (50,), got shape (49,)"),
    ]
    return [(what, DataConfig(source=src, uri=str(path), name=unique("bad")[:40]), msg)
            for what, src, path, msg in cases]


def test_bad_dataset_files_are_refused_and_nothing_is_written(stack: Settings,
                                                             tmp_path: Path) -> None:
    """User sees (prepare_data's failure, no retries): "<file>: wrong IDX magic number ...",
    "<file>: truncated ...", "<file>: 20 images but ... has 19 labels", "...: labels must lie
    in [0, 9] ...", "...: 1 NaN/inf pixel values (first in image 7)"; the bucket is unchanged."""
    storage = Storage.from_settings(stack)
    before = storage.list_keys(stack.s3_uri("datasets"))
    for what, cfg, message in _bad_sources(tmp_path):
        with pytest.raises(DataError) as e:
            prepare(cfg, storage)
        assert message in str(e.value), (what, str(e.value))
        assert Path(cfg.uri or "").name in str(e.value) or cfg.source == "mnist", what
    assert storage.list_keys(stack.s3_uri("datasets")) == before


# --------------------------------------------------------------------------- gan sample


def test_gan_sample_refuses_huge_n_before_any_connection(tmp_path: Path) -> None:
    """User sees: exit 2, "--n must be an integer in [1, 100000], got 10000000"; no stack
    is needed to be told, and no file is written."""
    out = tmp_path / "grid.png"
    r = _gan("sample", "--model", "models:/whatever@champion", "--n", "10000000",
             "--out", str(out), env=_no_stack_env(tmp_path / "home"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--n must be an integer in [1, 100000], got 10000000" in " ".join(
        (r.stdout + r.stderr).split())
    assert not out.exists() and not (tmp_path / "home").exists()


def test_gan_sample_unknown_model_names_it_and_writes_nothing(stack: Settings,
                                                              tmp_path: Path) -> None:
    """User sees: exit 1, "model 'models:/<name>@champion' not found at MLflow http://...";
    no grid, no npz."""
    name = unique("nosuchmodel")
    out, npz = tmp_path / "grid.png", tmp_path / "x.npz"
    r = _gan("sample", "--model", f"models:/{name}@champion", "--n", "4", "--out", str(out),
             "--npz", str(npz))
    text = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 1, text
    assert f"model 'models:/{name}@champion' not found at MLflow {stack.require_mlflow()}" in text
    assert not out.exists() and not npz.exists()
