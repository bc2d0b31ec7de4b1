"""gan.apps.inpaint / `gan inpaint`: known pixels kept bit for bit, the search lowers its loss,
baselines on the same images and mask, masks and their errors, grid and .npz outputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gan.apps import inpaint
from gan.apps import inputs as app_inputs
from gan.apps.inputs import InputError
from gan.apps.latent_search import SearchConfig
from gan.eval.judge import train_judge
from gan.registry.load import load_discriminator, load_generator

torch.set_num_threads(1)
FAST = SearchConfig(steps=10, lr=0.1)


@pytest.fixture(scope="module")
def data(tiny_digits):
    return tiny_digits


@pytest.fixture(scope="module")
def model_dir(tiny_cond_model_dir) -> Path:
    return tiny_cond_model_dir


@pytest.fixture(scope="module")
def GD(model_dir):
    return load_generator(str(model_dir)), load_discriminator(str(model_dir))


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("spec", ["center", "boxes"])
def test_known_pixels_kept_bitwise(GD, data, spec: str) -> None:
    G, D = GD
    x = data.x_holdout[:6]
    known = app_inputs.make_mask(spec, 6, 28, 28, seed=3)
    res = inpaint.inpaint(G, D, x, known, cfg=FAST)
    k = known.expand_as(x).bool()
    assert torch.equal(_bits(res.filled)[k], _bits(x)[k])  # bit for bit, not allclose
    assert torch.equal(_bits(res.filled)[~k], _bits(res.generated)[~k])
    assert res.history[-1] < res.history[0]
    assert res.label is not None and res.label.shape == (6,)  # every class tried


def test_given_labels_are_searched(GD, data) -> None:
    G, D = GD
    y = torch.tensor([4, 4, 9])
    res = inpaint.inpaint(G, D, data.x_holdout[:3], app_inputs.center_mask(28, 28), labels=y,
                          cfg=FAST)
    assert torch.equal(res.label, y)


def test_contextual_weights() -> None:
    known = app_inputs.center_mask(28, 28)  # missing rows/cols 7..20
    assert torch.equal(inpaint.contextual_weights(known, "plain"), known)
    w = inpaint.contextual_weights(known, "weighted")
    assert float(w[known == 0].abs().max()) == 0.0  # no weight inside the hole
    assert float(w[0, 0, 6, 14]) > 0.0  # next to the hole
    assert float(w[0, 0, 0, 0]) == 0.0  # far from it (outside the 7×7 window)
    with pytest.raises(ValueError, match="weighting"):
        inpaint.contextual_weights(known, "gaussian")  # type: ignore[arg-type]


def test_baselines(data) -> None:
    train = data.x_train
    x = train[[5, 17]].clone()  # queries that ARE train images: the neighbour is themselves
    known = app_inputs.random_boxes_mask(2, 28, 28, seed=1)
    filled, idx = inpaint.nearest_neighbour_fill(x, known, train)
    assert idx.tolist() == [5, 17] and torch.equal(filled, x)
    mean = inpaint.mean_fill(x, known, train)
    hole = ~known.expand_as(x).bool()
    assert torch.equal(mean[hole], train.mean(0, keepdim=True).expand_as(x)[hole])
    assert torch.equal(mean[~hole], x[~hole])
    mse, psnr = inpaint.region_errors(x, x, known)
    assert mse == 0.0 and psnr == pytest.approx(100.0)  # clamped at MSE 1e-10
    mse, _ = inpaint.region_errors(torch.full_like(x, 1.0), torch.full_like(x, -1.0), known)
    assert mse == pytest.approx(1.0)  # the whole [0, 1] range apart


def test_evaluation_uses_same_images_and_mask(GD, data) -> None:
    G, D = GD
    judge = train_judge(data, 1, seed=0)
    idx = np.array([0, 3, 8, 11])
    known = app_inputs.center_mask(28, 28)
    ev = inpaint.evaluate_inpainting(G, D, data, judge, known, holdout_idx=idx, cfg=FAST)
    assert set(ev.rows) == {"gan", "mean", "nearest", "original"}
    np.testing.assert_array_equal(ev.holdout_idx, idx)
    x = data.x_holdout[idx]
    k = known.expand_as(x).bool()
    for name, f in ev.filled.items():  # every method saw the same images and the same mask
        assert torch.equal(_bits(f)[k], _bits(x)[k]), name
    assert torch.equal(ev.filled["original"], x)
    for r in ev.rows.values():
        assert 0.0 <= r["judge_accuracy"] <= 1.0 and r["mse"] >= 0.0


def test_masks_and_mask_errors(tmp_path: Path) -> None:
    c = app_inputs.center_mask(28, 28)
    assert c.shape == (1, 1, 28, 28) and int((c == 0).sum()) == 14 * 14
    b1 = app_inputs.random_boxes_mask(3, 28, 28, seed=2)
    assert torch.equal(b1, app_inputs.random_boxes_mask(3, 28, 28, seed=2))
    m = np.zeros((28, 28), np.uint8)
    m[:5] = 255  # nonzero = missing
    np.save(tmp_path / "m.npy", m)
    known = app_inputs.load_mask_file(str(tmp_path / "m.npy"), 4, 28, 28)
    assert known.shape == (1, 1, 28, 28) and float(known[0, 0, :5].sum()) == 0.0
    np.savez(tmp_path / "m.npz", mask=np.zeros((4, 28, 28), bool) | (m > 0))
    assert app_inputs.load_mask_file(str(tmp_path / "m.npz"), 4, 28, 28).shape == (4, 1, 28, 28)
    np.save(tmp_path / "small.npy", np.ones((8, 8)))
    with pytest.raises(InputError, match=r"mask has shape \(1, 1, 8, 8\).*\(28, 28\)"):
        app_inputs.load_mask_file(str(tmp_path / "small.npy"), 4, 28, 28)
    np.save(tmp_path / "three.npy", np.ones((3, 28, 28)))
    with pytest.raises(InputError, match="for 4 images"):
        app_inputs.load_mask_file(str(tmp_path / "three.npy"), 4, 28, 28)
    np.save(tmp_path / "none.npy", np.zeros((28, 28)))
    with pytest.raises(InputError, match="no missing pixel"):
        app_inputs.make_mask(str(tmp_path / "none.npy"), 2, 28, 28)
    with pytest.raises(InputError, match=r"mask has shape"):
        inpaint.check_inputs(torch.zeros(2, 1, 28, 28), torch.ones(3, 1, 28, 28), (1, 28, 28))


def test_cli_inpaint_grid_and_npz(model_dir, data, tmp_path: Path, settings_env) -> None:
    from gan.cli.main import app

    x, y = data.x_holdout[:3].numpy(), data.y_holdout[:3].numpy()
    np.savez(tmp_path / "in.npz", x=x, y=y)
    r = CliRunner().invoke(app, ["inpaint", "--model", str(model_dir), "--input",
                                 str(tmp_path / "in.npz"), "--mask", "boxes", "--steps", "3",
                                 "--out", str(tmp_path / "g.png"), "--npz",
                                 str(tmp_path / "f.npz")])
    assert r.exit_code == 0, r.output
    img = Image.open(io.BytesIO((tmp_path / "g.png").read_bytes()))
    assert img.size == ((3 * 30 + 2) * 2, (3 * 30 + 2) * 2)  # 3 columns, 3 rows, scale 2
    with np.load(tmp_path / "f.npz") as f:
        known = f["known"].astype(bool)
        assert f["x"].shape == (3, 1, 28, 28) and f["y"].tolist() == y.tolist()
        np.testing.assert_array_equal(f["x"][known], x[known])  # exact equality


def test_cli_inpaint_errors(model_dir, tmp_path: Path, settings_env) -> None:
    from gan.cli.main import app

    np.savez(tmp_path / "in.npz", x=np.zeros((2, 28, 28), np.float32))
    np.save(tmp_path / "m.npy", np.ones((2, 14, 14)))
    base = ["inpaint", "--model", str(model_dir), "--input", str(tmp_path / "in.npz")]
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 2 and "nothing to write" in r.output
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "g.jpg")])
    assert r.exit_code == 2 and "use a .png name" in r.output
    r = CliRunner().invoke(app, [*base, "--mask", str(tmp_path / "m.npy"), "--out",
                                 str(tmp_path / "g.png")])
    assert r.exit_code == 1 and "m.npy: mask has shape (2, 1, 14, 14)" in r.output, r.output
    np.savez(tmp_path / "big.npz", x=np.zeros((2, 32, 32), np.float32))
    r = CliRunner().invoke(app, ["inpaint", "--model", str(model_dir), "--input",
                                 str(tmp_path / "big.npz"), "--out", str(tmp_path / "g.png")])
    assert r.exit_code == 1 and "(N, 1, 28, 28)" in r.output
    assert not (tmp_path / "g.png").exists()


def test_cli_inpaint_eval(model_dir, data, tmp_path: Path, settings_env, monkeypatch) -> None:
    """`gan inpaint-eval` end to end on a local model dir (small digits subset, few steps)."""
    import json

    from gan.apps.studies import runs as apps_eval
    from gan.cli.main import app

    monkeypatch.setattr(apps_eval, "prepare_arrays", lambda cfg: data)
    r = CliRunner().invoke(app, ["inpaint-eval", "--model", str(model_dir), "--quick", "--n",
                                 "12", "--steps", "3", "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "r.json").read_text())
    assert set(out["rows"]) == {"gan", "mean", "nearest", "original"} and out["n_images"] == 12
    assert out["missing_share"] == pytest.approx(14 * 14 / (28 * 28))
    for name in ("gan", "mean", "nearest"):
        assert f"| {name} |" in out["table"] and out["rows"][name]["mse"] > 0.0
