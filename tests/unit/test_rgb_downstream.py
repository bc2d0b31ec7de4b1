"""Colour downstream of training, for labelled data: the bundled RGB shapes (real PNG files
through the images source) → a model shaped by the data (gan.core.model_fit) → a few epochs →
the judge and evaluation at C = 3, colour sample grids, the saved MLflow model (image_shape in
its metadata), `gan sample`, anomaly scoring and inpainting on RGB inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from gan.apps import anomaly, fanogan, inpaint
from gan.apps.latent_search import SearchConfig
from gan.apps.studies.demo_models import save_model_dir, tiny_recipe
from gan.core.config import DataConfig, EvalConfig
from gan.core.model_fit import fit_model_to_data
from gan.core.records import DatasetRef
from gan.data.prepare import PreparedData, prepare_arrays
from gan.data.shapes import CLASSES, write_shapes
from gan.eval.evaluate import evaluate_generator
from gan.eval.judge import train_judge
from gan.registry.load import load_discriminator, load_generator
from gan.train.loop import train_local

FAST = SearchConfig(steps=5, lr=0.1)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    root = tmp_path_factory.mktemp("shapes") / "shapes"
    write_shapes(root, n_per_class=40)
    return prepare_arrays(DataConfig(source="images", uri=str(root), image_size=32))


def _ref(data: PreparedData) -> DatasetRef:
    c, h, _ = data.image_shape
    return DatasetRef(name=data.name, version=data.version, uri="s3://b/x/", source="images",
                      n_train=len(data.x_train), n_holdout=len(data.x_holdout),
                      num_classes=data.num_classes, image_size=h, channels=c,
                      labelled=data.labelled)


@pytest.fixture(scope="module")
def model_dir(shapes: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    model_cfg, train_cfg = tiny_recipe(conditional=True, epochs=2)
    model_cfg = fit_model_to_data(model_cfg, _ref(shapes))  # 1×28², 10 classes → 3×32², 4
    state = train_local(shapes, model_cfg, train_cfg)
    return save_model_dir(tmp_path_factory.mktemp("rgb") / "model", state)


def _rgb_png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGB"
    return np.asarray(img)


def test_shapes_are_rgb_and_labelled(shapes: PreparedData) -> None:
    assert shapes.image_shape == (3, 32, 32) and shapes.labelled
    assert shapes.class_names == tuple(CLASSES) and shapes.num_classes == len(CLASSES)


def test_judge_and_evaluation_at_three_channels(shapes: PreparedData, model_dir: Path) -> None:
    judge = train_judge(shapes, epochs=2)
    assert judge.net.arch.channels == 3 and judge.net.arch.image_size == 32
    assert judge.features(shapes.x_holdout[:5]).shape == (5, judge.net.arch.feature_dim)
    G = load_generator(str(model_dir))
    cfg = EvalConfig(n_samples=100, n_seeds=2, min_judge_accuracy=0.0)
    result, pics = evaluate_generator(G, shapes, judge, cfg)
    assert np.isfinite(result["metrics"]["fid"]) and len(result["class_hist"]) == len(CLASSES)
    for name in ("samples", "real_vs_generated"):
        grid = _rgb_png(pics[name])
        # colour, not grey stored as RGB: the channels differ somewhere
        assert not (np.array_equal(grid[..., 0], grid[..., 1])
                    and np.array_equal(grid[..., 1], grid[..., 2])), name


def test_saved_model_says_its_image_shape(model_dir: Path) -> None:
    meta = yaml.safe_load((model_dir / "MLmodel").read_text())["metadata"]
    assert meta["image_shape"] == [3, 32, 32] and meta["conditional"] is True
    assert meta["num_classes"] == len(CLASSES)
    G = load_generator(str(model_dir))
    assert G.image_shape == (3, 32, 32) and G.num_classes == len(CLASSES)


def test_gan_sample_writes_colour(model_dir: Path, tmp_path: Path, settings_env) -> None:
    from gan.cli.main import app

    r = CliRunner().invoke(app, ["sample", "--model", str(model_dir), "--n", "8", "--out",
                                 str(tmp_path / "g.png"), "--npz", str(tmp_path / "s.npz")])
    assert r.exit_code == 0, r.output
    _rgb_png((tmp_path / "g.png").read_bytes())
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (8, 3, 32, 32) and f["y"].shape == (8,)


def test_anomaly_and_inpainting_on_rgb(shapes: PreparedData, model_dir: Path,
                                       tmp_path: Path) -> None:
    u8 = ((shapes.x_holdout[:4].numpy() + 1) * 127.5).round().astype(np.uint8)  # (4, 3, 32, 32)
    np.savez(tmp_path / "nchw.npz", x=u8, y=shapes.y_holdout[:4].numpy())
    np.savez(tmp_path / "nhwc.npz", x=u8.transpose(0, 2, 3, 1))  # channels last is accepted
    for name in ("nchw", "nhwc"):
        s = anomaly.score_file(str(model_dir), str(tmp_path / f"{name}.npz"),
                               str(tmp_path / f"{name}.csv"), settings=None, cfg=FAST)
        assert s["n"] == 4
        assert len((tmp_path / f"{name}.csv").read_text().splitlines()) == 5
    out = inpaint.inpaint_file(str(model_dir), str(tmp_path / "nchw.npz"), "center",
                               out_png=str(tmp_path / "in.png"),
                               out_npz=str(tmp_path / "in.npz"), settings=None, cfg=FAST)
    assert out["n"] == 4
    _rgb_png((tmp_path / "in.png").read_bytes())
    with np.load(tmp_path / "in.npz") as f:
        filled, known = f["x"], f["known"]
    assert filled.shape == (4, 3, 32, 32) and known.shape == (4, 1, 32, 32)
    x = shapes.x_holdout[:4].numpy()
    x_q = (np.round((x + 1) * 127.5) / 127.5 - 1).astype(np.float32)  # the uint8 input's values
    kept = np.broadcast_to(known.astype(bool), filled.shape)
    np.testing.assert_allclose(filled[kept], x_q[kept], atol=1e-6)  # known pixels kept
    with pytest.raises(Exception, match=r"\(N, 3, 32, 32\)"):
        np.savez(tmp_path / "grey.npz", x=u8[:, 0])
        anomaly.score_file(str(model_dir), str(tmp_path / "grey.npz"),
                           str(tmp_path / "g.csv"), settings=None, cfg=FAST)


def test_fanogan_encoder_on_rgb(shapes: PreparedData, model_dir: Path) -> None:
    G, D = load_generator(str(model_dir)), load_discriminator(str(model_dir))
    x, y = shapes.x_train[:32], shapes.y_train[:32]
    E, _ = fanogan.train_encoder(G, D, x, y, cfg=fanogan.EncoderConfig(epochs=1))
    s = fanogan.fanogan_scores(G, D, E, x, labels=y, kappa=0.5)
    assert s.score.shape == (32,) and np.isfinite(s.score).all()
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        fanogan.fanogan_scores(G, D, E, torch.zeros(2, 1, 32, 32), labels=y[:2])
