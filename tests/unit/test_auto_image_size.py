"""An empty `data.image_size` follows the data (issue 14): the images' median shorter side if
it is 28, 32, 64 or 128, else the next of those up, capped at 128 — for image files (read from
their headers), array sources (digits, npz, CIFAR-10) and the retrain form alike; digits keep
28 and the very version an explicit 28 makes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import validate

from flows.retrain import retrain
from gan.core.config import DataConfig, RetrainParams
from gan.data.decode import auto_image_size
from gan.data.prepare import prepare_arrays
from gan.data.shapes import write_shapes
from gan.data.validate import DataError

torch.set_num_threads(1)


def _png(side_w: int, side_h: int, value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side_h, side_w, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("sides", "size"), [
    ([8], 28), ([28], 28), ([29], 32), ([32, 32, 100], 32), ([40, 50, 60], 64),
    ([64, 64, 128, 128], 64), ([100], 128), ([129], 128), ([3000, 4000], 128),
])
def test_the_rule_median_shorter_side_then_next_supported_size_up(sides: list[int],
                                                                 size: int) -> None:
    assert auto_image_size(sides) == size


def test_digits_stay_28_and_make_the_same_version_as_an_explicit_28() -> None:
    auto = prepare_arrays(DataConfig(source="digits", limit=100))
    explicit = prepare_arrays(DataConfig(source="digits", limit=100, image_size=28))
    assert auto.image_shape == (1, 28, 28) and auto.version == explicit.version
    assert prepare_arrays(DataConfig(source="digits", limit=100, image_size=32)).version \
        != auto.version


def test_rgb_pngs_keep_their_32_pixels_without_image_size(tmp_path: Path) -> None:
    write_shapes(tmp_path / "s", n_per_class=5)  # 32×32 RGB PNGs
    d = prepare_arrays(DataConfig(source="images", uri=str(tmp_path / "s")))
    assert d.image_shape == (3, 32, 32)


def test_image_files_of_other_sizes_snap_up_to_a_supported_size(tmp_path: Path) -> None:
    for i, (w, h) in enumerate([(40, 50), (60, 45), (70, 52), (300, 20)]):  # shorter: 40 45 52 20
        (tmp_path / f"{i}.png").write_bytes(_png(w, h, 10 * i))
    d = prepare_arrays(DataConfig(source="images", uri=str(tmp_path), holdout_fraction=0.25))
    assert d.image_shape == (1, 64, 64)  # median shorter side 40 → 64 (grey: one channel)
    (tmp_path / "big.png").write_bytes(_png(500, 400, 200))
    (tmp_path / "bigger.png").write_bytes(_png(600, 600, 220))
    (tmp_path / "biggest.png").write_bytes(_png(700, 700, 240))
    assert auto_image_size([40, 45, 52, 20, 400, 600, 700]) == 64  # the median, not the max
    (tmp_path / "huge.png").write_bytes(_png(800, 800, 250))
    (tmp_path / "huger.png").write_bytes(_png(900, 900, 255))
    d = prepare_arrays(DataConfig(source="images", uri=str(tmp_path), holdout_fraction=0.25))
    assert d.image_shape == (1, 128, 128)  # median of 9 is 400 → capped at 128


def test_a_bad_file_is_still_named_when_the_size_comes_from_the_data(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(_png(32, 32, 10 * i))
    (tmp_path / "notes.png").write_bytes(b"a text file\n")
    with pytest.raises(DataError, match="notes.png: not a PNG, JPEG or WebP"):
        prepare_arrays(DataConfig(source="images", uri=str(tmp_path)))
    d = prepare_arrays(DataConfig(source="images", uri=str(tmp_path), max_bad_fraction=0.25,
                                  holdout_fraction=0.3))  # 4 images: 3 train, 1 holdout
    assert d.image_shape == (1, 32, 32)


def test_array_sources_follow_their_native_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", x=rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8),
             y=np.arange(20) % 2)
    assert prepare_arrays(DataConfig(source="npz", uri=str(tmp_path / "rgb.npz"))).image_shape \
        == (3, 32, 32)
    np.savez(tmp_path / "small.npz", x=rng.random((20, 12, 12)), y=np.arange(20) % 2)
    assert prepare_arrays(DataConfig(source="npz", uri=str(tmp_path / "small.npz"))) \
        .image_shape == (1, 28, 28)
    x = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)  # 6 a class: each has a train one
    rec = np.concatenate([(np.arange(60) % 10)[:, None].astype(np.uint8), x.reshape(60, -1)], 1)
    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "data_batch_1.bin").write_bytes(rec.tobytes())
    d = prepare_arrays(DataConfig(source="cifar10", uri=str(tmp_path / "bins")))
    assert d.image_shape == (3, 32, 32)


def test_retrain_params_leave_the_size_to_the_data() -> None:
    data, model, _, _ = RetrainParams().resolve()
    assert data.image_size is None and model.image_size == 28  # until fit_model_to_data
    # An architecture that needs a power of two is not refused before the data is known.
    assert RetrainParams(arch="resnet").resolve()[1].image_size == 32
    assert RetrainParams(arch="resnet", data=DataConfig(image_size=64)).resolve()[1] \
        .image_size == 64


def test_the_form_takes_an_empty_image_size_and_says_what_it_means() -> None:
    schema = parameter_schema(retrain.fn).model_dump_for_openapi()
    validate({"params": {"data": {"image_size": None}}}, schema, raise_on_error=True)
    desc = schema["definitions"]["DataConfig"]["properties"]["image_size"]["description"]
    assert "Empty: from the data" in desc and "28, 32, 64 or 128" in desc
