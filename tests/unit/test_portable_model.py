"""The self-contained model format: the portable loader equals the pipeline's G, and a saved
model loads both ways (pyfunc, pytorch/pt2) in a subprocess where `gan` cannot be imported.

What it pins: `gan/registry/portable/gan_generator_model.py` (the file that travels inside each
model version) rebuilds exactly `gan.nets.models`' generators from a bundle — for every
architecture `gan retrain --arch` offers (read from the config's Literal, so a new one is
covered the day it is added) —, its inference form (`fuse`) draws the same images up to float
rounding, its input forms agree with each other and with `gan sample`'s seeded latents, bad
inputs are refused naming the problem, and a run whose architecture could not be published is
refused before it trains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import typing
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from flows import params as P
from gan.core.config import ModelConfig, RetrainParams
from gan.nets.models import build, sample_latent
from gan.registry import model_format as mm
from gan.registry.portable import gan_generator_model as portable

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "tests" / "portable_client.py"
TINY = {"g_hidden": (16, 32), "d_hidden": (32, 16), "base_channels": 8, "latent_dim": 12}


def cli_archs() -> tuple[str, ...]:
    """The architectures `gan retrain --arch` accepts: the Literal of the field it sets."""
    option = next(o for o in P.RETRAIN_OPTIONS if o.flags == "--arch")
    annotation = P.field_info(option.field).annotation
    literal = next(a for a in typing.get_args(annotation) if typing.get_origin(a) is typing.Literal)
    return typing.get_args(literal)


ARCHS = cli_archs()
CASES = [(arch, conditional) for arch in ARCHS for conditional in (True, False)]


def tiny_size(arch: str) -> int:
    """28 (the digits) where the arch takes it, else 16 (a power of two every arch takes)."""
    try:
        ModelConfig(arch=arch, image_size=28)
    except ValueError:
        return 16
    return 28


def tiny_bundle(tmp: Path, arch: str, conditional: bool) -> tuple[ModelConfig, torch.nn.Module,
                                                                    Path]:
    cfg = ModelConfig(arch=arch, conditional=conditional, image_size=tiny_size(arch), **TINY)
    torch.manual_seed(1)
    G, D = build(cfg)
    G.train()  # BatchNorm running stats off their defaults, so folding them is exercised
    for _ in range(3):
        G(torch.randn(16, cfg.latent_dim), torch.arange(16) % 10)
    G.eval()
    return cfg, G, mm.write_bundle(tmp / f"{arch}-{conditional}" / "gan_generator", cfg, G, D)


def reference(G: torch.nn.Module, cfg: ModelConfig, n: int = 5) -> dict[str, np.ndarray]:
    """z, y and the pipeline G's images for them and for the request {"n": n, "seed": 7}."""
    z = sample_latent(n, cfg.latent_dim, torch.Generator().manual_seed(3))
    y = torch.arange(n) % cfg.num_classes
    z_req = sample_latent(n, cfg.latent_dim, torch.Generator().manual_seed(7))
    with torch.no_grad():
        x = G(z, y if cfg.conditional else None).numpy()
        x_req = G(z_req, y if cfg.conditional else None).numpy()
    ref = {"z": z.numpy(), "x": x, "x_req": x_req}
    return ref | ({"y": y.numpy()} if cfg.conditional else {})


def test_the_cli_offers_what_the_model_config_builds() -> None:
    """The list walked here is the CLI's, and it is every arch a ModelConfig takes."""
    literal = typing.get_args(ModelConfig.model_fields["arch"].annotation)
    assert set(ARCHS) == set(literal) and {"mlp", "dcgan", "dcgan-deep", "resnet"} <= set(ARCHS)


@pytest.mark.parametrize(("arch", "conditional"), CASES)
def test_portable_generator_is_the_pipelines(tmp_path: Path, arch: str, conditional: bool
                                             ) -> None:
    cfg, G, bundle = tiny_bundle(tmp_path, arch, conditional)
    ref = reference(G, cfg)
    exact = portable.load_generator(bundle, fused=False)
    assert list(exact.state_dict()) == list(G.state_dict())  # same layers, same names
    z, y = torch.from_numpy(ref["z"]), torch.from_numpy(ref["y"]) if conditional else None
    with torch.no_grad():
        np.testing.assert_array_equal(exact(z, y).numpy(), ref["x"])
        fused = portable.load_generator(bundle)
        np.testing.assert_allclose(fused(z, y).numpy(), ref["x"], atol=2e-6)
    model = portable._load_pyfunc(str(bundle))
    np.testing.assert_allclose(model.predict({"n": 5, "seed": 7}), ref["x_req"], atol=2e-6)
    out = model.predict({"z": ref["z"], "y": ref.get("y")})
    size = cfg.image_size
    assert out.shape == (5, 1, size, size) and out.dtype == np.float32
    assert -1.0 <= out.min() and out.max() <= 1.0


def test_input_forms_and_errors(tmp_path: Path) -> None:
    cfg, G, bundle = tiny_bundle(tmp_path, "dcgan", True)
    model = portable._load_pyfunc(str(bundle))
    one_label = model.predict({"n": 4, "seed": 2, "y": 3})
    labels = model.predict({"n": 4, "seed": 2, "y": [3, 3, 3, 3]})
    np.testing.assert_array_equal(one_label, labels)
    turns = model.predict({"n": 12, "seed": 2})  # no y in a request: classes take turns
    z = sample_latent(12, cfg.latent_dim, torch.Generator().manual_seed(2)).numpy()
    np.testing.assert_array_equal(turns, model.predict({"z": z, "y": np.arange(12) % 10}))
    assert model.predict({"n": 0}).shape == (0, 1, 28, 28)
    with pytest.raises(ValueError, match="conditional: input needs 'y'"):
        model.predict({"z": z})
    with pytest.raises(ValueError, match=r"z must have shape \(N, 12\)"):
        model.predict({"z": z[:, :5], "y": np.arange(12) % 10})
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        model.predict({"n": 2, "y": [0, 10]})
    with pytest.raises(ValueError, match="y has 3 labels for 2 images"):
        model.predict({"n": 2, "y": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"n must be >= 0, got -1"):
        model.predict({"n": -1})
    with pytest.raises(ValueError, match="n must be an integer"):
        model.predict({"n": 2.5})
    with pytest.raises(ValueError, match="input must be"):
        model.predict({"count": 3})
    with pytest.raises(TypeError, match="generator input must be a dict"):
        model.predict([1, 2, 3])
    (bundle / portable.CONFIG_FILE).write_text('{"format": "other"}')
    with pytest.raises(portable.GeneratorFormatError, match="format is not"):
        portable.load_generator(bundle)


def test_a_request_is_bounded_by_its_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    """One request may produce at most `max_output_bytes` of float32 images (default 1 GiB,
    the model's MLflow model_config, overridable when loading): 1,000,000 images of a
    3×128×128 model (183 GiB) are refused naming the limit, before anything is drawn; a request
    within it is drawn in chunks into one output array."""
    cfg = ModelConfig(arch="dcgan", image_size=128, channels=3, base_channels=4,
                      latent_dim=8)
    torch.manual_seed(0)
    G, D = build(cfg)
    bundle = mm.write_bundle(tmp_path / "rgb" / "gan_generator", cfg, G.eval(), D.eval())
    model = portable._load_pyfunc(str(bundle))
    def refuse(*shape: object, **kwargs: object) -> None:
        raise AssertionError(f"latents of shape {shape} drawn: the request was accepted")

    monkeypatch.setattr(portable.torch, "randn", refuse)
    with pytest.raises(ValueError, match=r"1000000 images of 3×128×128 float32 are 183\.1 GiB.*"
                       r"limit of 1\.0 GiB per request.*at most 5461.*max_output_bytes"):
        model.predict({"n": 1_000_000, "seed": 0})
    with pytest.raises(ValueError, match="limit of 1.0 GiB"):
        model.predict({"z": np.zeros((5462, 8), np.float32)})
    monkeypatch.undo()
    per_image = 3 * 128 * 128 * 4
    small = portable._load_pyfunc(str(bundle), {"max_output_bytes": 3 * per_image})
    assert small.predict({"n": 3}).shape == (3, 3, 128, 128)
    with pytest.raises(ValueError, match=r"4 images .* limit of 576\.0 KiB.*at most 3"):
        small.predict({"n": 4})
    assert portable.chunk_size((3, 128, 128)) == 42 and portable.chunk_size((1, 28, 28)) == 2674
    monkeypatch.setattr(portable, "CHUNK_BYTES", 2 * per_image)  # chunks of 2: same images
    chunked = portable._load_pyfunc(str(bundle)).predict({"n": 5, "seed": 3})
    monkeypatch.undo()
    np.testing.assert_allclose(chunked, model.predict({"n": 5, "seed": 3}), atol=1e-6)
    saved = mm.save_bundle_model(tmp_path / "rgb" / "model", bundle)
    conf = yaml.safe_load((saved / "MLmodel").read_text())
    assert conf["flavors"]["python_function"]["config"] == {"max_output_bytes": 2**30}
    loaded = mlflow.pyfunc.load_model(str(saved), model_config={"max_output_bytes": per_image})
    with pytest.raises(Exception, match="limit of 192.0 KiB"):
        loaded.predict({"n": 2})


def test_saved_model_is_self_contained(tmp_path: Path, portable_client) -> None:
    """Both flavours of a locally saved model, for every architecture the CLI offers, an
    unconditional and a conditional G each, in a subprocess that cannot import `gan` or `flows`
    (tests/portable_client.py): each publishes, loads and samples without the project."""
    cases = []
    for arch, conditional in CASES:
        cfg, G, bundle = tiny_bundle(tmp_path, arch, conditional)
        path = mm.save_bundle_model(bundle.parent / "model", bundle)
        conf = yaml.safe_load((path / "MLmodel").read_text())
        assert conf["flavors"]["python_function"]["loader_module"] == "gan_generator_model"
        assert conf["flavors"]["pytorch"]["model_data"] == "data/gan_generator"
        assert (path / "code" / "gan_generator_model.py").is_file()
        # Nothing else: each file and folder costs every consumer's cold load MLflow requests.
        files = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}
        assert files == {"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt",
                         "code/gan_generator_model.py", "data/gan_generator/model.pt2",
                         "data/gan_generator/model_config.json",
                         "data/gan_generator/generator.safetensors",
                         "data/gan_generator/discriminator.safetensors"}, files
        assert conf["metadata"]["request_example"] == mm.request_example(cfg)
        reqs = (path / "requirements.txt").read_text().split()
        assert {r.split("==")[0] for r in reqs} == {"torch", "numpy", "mlflow"}
        np.savez(bundle.parent / "ref.npz", **reference(G, cfg))
        cases.append({"uri": str(path), "conditional": conditional,
                      "ref": str(bundle.parent / "ref.npz")})
    results = portable_client(cases)
    assert len(results) == len(CASES)
    assert all(x["ok"] and not x["pipeline_imported"] for x in results), results
    for (arch, _), x in zip(CASES, results, strict=True):
        size = tiny_size(arch)
        assert x["shape"] == [5, 1, size, size] and x["dtype"] == "float32", (arch, x)


def test_an_arch_the_loader_cannot_build_is_refused_before_training(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`gan retrain` and the flow resolve their parameters before any work: an arch the portable
    loader does not know (or whose layers it names differently) fails there, naming the arch,
    instead of at `register` after a whole training."""
    for arch in ARCHS:
        P.resolve(RetrainParams(arch=arch))  # every offered arch passes
    monkeypatch.delitem(portable.GENERATORS, "resnet")
    with pytest.raises(P.ParamsError, match="arch 'resnet' cannot be published"):
        P.resolve(RetrainParams(arch="resnet"))

    class Renamed(portable.MLPGenerator):  # a copy that drifted from gan.nets
        def __init__(self, cfg: dict) -> None:
            super().__init__(cfg)
            self.extra = torch.nn.Linear(2, 2)

    monkeypatch.setitem(portable.GENERATORS, "mlp", Renamed)
    with pytest.raises(P.ParamsError, match="'mlp'.*extra.weight"):
        P.resolve(RetrainParams(arch="mlp"))


def test_client_refuses_the_pipeline(tmp_path: Path) -> None:
    """The hook really refuses: the client script fails on a model only `gan` can load."""
    cfg, G, bundle = tiny_bundle(tmp_path, "mlp", False)
    legacy = tmp_path / "legacy"
    mlflow.pyfunc.save_model(str(legacy), loader_module="gan.registry.model_format",
                             data_path=str(bundle))
    np.savez(tmp_path / "ref.npz", **reference(G, cfg))
    (tmp_path / "cases.json").write_text(json.dumps(
        [{"uri": str(legacy), "conditional": False, "ref": str(tmp_path / "ref.npz")}]))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, str(CLIENT), str(tmp_path / "cases.json")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "the pipeline is not installed here" in r.stderr


def test_safetensors_reader_matches_the_library(tmp_path: Path) -> None:
    """The portable reader (no `safetensors` package on the client) reads what the pipeline
    writes, every dtype the format names, and refuses a malformed file naming it."""
    tensors = {"f32": torch.randn(3, 4), "f64": torch.randn(2, dtype=torch.float64),
               "bf16": torch.randn(5).to(torch.bfloat16), "i64": torch.arange(6).reshape(2, 3),
               "u8": torch.arange(4, dtype=torch.uint8), "b": torch.tensor([True, False]),
               "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5)}
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "x"})
    back = portable.read_safetensors(tmp_path / "t.safetensors")
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    raw = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-8])
    with pytest.raises(portable.GeneratorFormatError, match="cut.safetensors"):
        portable.read_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 40)
    with pytest.raises(portable.GeneratorFormatError, match="not a readable safetensors"):
        portable.read_safetensors(tmp_path / "pickle.safetensors")


def test_logged_model_has_both_flavours(tmp_path: Path) -> None:
    """`log_bundle_model` into a run (a local SQLite tracking store: no server) gives a logged
    model with the portable pyfunc, the pt2 pytorch flavour and the model's facts."""
    cfg, G, bundle = tiny_bundle(tmp_path, "mlp", True)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # artifacts under tmp_path (a SQLite store's default is ./mlruns in the working folder)
        exp = mlflow.create_experiment("portable", artifact_location=str(tmp_path / "artifacts"))
        with mlflow.start_run(experiment_id=exp):
            info = mm.log_bundle_model("generator", bundle, metadata={"run_id": "r1"})
        assert set(info.flavors) == {"python_function", "pytorch"}
        assert info.flavors["python_function"]["loader_module"] == "gan_generator_model"
        model = mlflow.pyfunc.load_model(info.model_uri)
        meta = model.metadata.metadata
        assert (meta["latent_dim"], meta["conditional"], meta["run_id"]) == (12, True, "r1")
        ref = reference(G, cfg)
        np.testing.assert_allclose(model.predict({"n": 5, "seed": 7}), ref["x_req"], atol=2e-6)
        g = mlflow.pytorch.load_model(info.model_uri)
        with torch.inference_mode():
            out = g(torch.from_numpy(ref["z"]), torch.from_numpy(ref["y"])).numpy()
        np.testing.assert_allclose(out, ref["x"], atol=2e-6)
    finally:
        mlflow.set_tracking_uri(before)


def test_exports_from_two_threads_at_once(tmp_path: Path) -> None:
    """Two registrations in one process (two flow runs) export at the same time: both work."""
    bundles = [tiny_bundle(tmp_path, arch, True)[2] for arch in ("dcgan", "mlp")]
    errors: list[BaseException] = []

    def export(i: int) -> None:
        try:
            mm.export_pt2(bundles[i], tmp_path / f"g{i}.pt2")
        except BaseException as e:  # noqa: BLE001 (collected, asserted below)
            errors.append(e)

    threads = [threading.Thread(target=export, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(2):
        G = torch.export.load(str(tmp_path / f"g{i}.pt2")).module()
        assert G(torch.randn(3, 12), torch.arange(3)).shape == (3, 1, 28, 28)
