"""Label sets that are not 0..K−1: integers numbered from 1 or with gaps, strings, folder names.

What it pins: every source's labels become classes 0..K−1 with the original labels kept as
the dataset version's `class_names` (in their natural order: 2 before 10); the model card shows
them; the published model takes the data's own labels (label 7 of a 1..10 set is class "7",
not index 7); digits and MNIST keep their fixed ten classes exactly as before.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gan.core.config import DataConfig, ModelConfig
from gan.core.records import DatasetRef, Report
from gan.data.prepare import prepare_arrays
from gan.data.sources import load_source
from gan.nets.models import build
from gan.registry import model_format as mm
from gan.registry.model_card import model_card
from gan.registry.portable import gan_generator_model as portable

torch.set_num_threads(1)


def _digits_npz(path: Path, labels: np.ndarray) -> Path:
    """The 1,797 scikit-learn digits (uint8, 8×8) with the given labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(path, x=(d.images * 16).clip(0, 255).astype(np.uint8), y=labels[d.target])
    return path


def test_labels_numbered_from_one_make_ten_classes_named_by_the_labels(tmp_path: Path) -> None:
    """1..10 made num_classes 11 with an empty class 0: the gate then said 'classes covered
    1/11' (or 10/11) and could never pass."""
    path = _digits_npz(tmp_path / "from1.npz", np.arange(1, 11))
    d = prepare_arrays(DataConfig(source="npz", uri=str(path), image_size=8))
    assert d.num_classes == 10, d.class_hist("train")
    assert d.class_names == tuple(str(i) for i in range(1, 11))  # "2" before "10"
    assert min(d.class_hist("train")) > 100 and min(d.class_hist("holdout")) > 20
    assert set(d.y_train.tolist()) == set(range(10))


def test_integer_labels_with_gaps_and_string_labels(tmp_path: Path) -> None:
    gaps = _digits_npz(tmp_path / "gaps.npz", np.array([3, 7, 42, 5, 100, 8, 9, 11, 12, 13]))
    src = load_source(DataConfig(source="npz", uri=str(gaps)))
    assert src.class_names == ("3", "5", "7", "8", "9", "11", "12", "13", "42", "100")
    assert set(src.y.tolist()) == set(range(10))
    # the image of original label 42 is class index 8 ("42")
    raw = np.load(gaps)["y"]
    assert np.array_equal(np.array(src.class_names)[src.y], raw.astype(str))

    def png(v: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8), v, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    for labels, names in ((["10", "2", "1"] * 3, ("1", "2", "10")),
                          ([2, 10, 1] * 3, ("1", "2", "10")),
                          (["b", "a", "b10"] * 3, ("a", "b", "b10"))):
        table = pa.table({"image": pa.array([png(i * 20) for i in range(9)], pa.binary()),
                          "label": pa.array(labels)})
        pq.write_table(table, tmp_path / "t.parquet")
        p = load_source(DataConfig(source="parquet", uri=str(tmp_path / "t.parquet"),
                                   image_size=8))
        assert p.class_names == names, labels
        assert [names[i] for i in p.y] == [str(v) for v in labels]
    for cls in ("1", "2", "10"):  # folder names: natural order too
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "f" / cls / f"{i}.png").write_bytes(png(int(cls) * 10 + i))
    f = load_source(DataConfig(source="images", uri=str(tmp_path / "f"), image_size=8))
    assert f.class_names == ("1", "2", "10")  # files come in path order: 1/, 10/, 2/
    assert [f.class_names[i] for i in f.y] == ["1", "1", "10", "10", "2", "2"]


def test_digits_keep_their_ten_fixed_classes() -> None:
    d = prepare_arrays(DataConfig(limit=60))
    assert d.num_classes == 10 and d.class_names == ()
    assert set(d.y_train.tolist()) <= set(range(10))


# --------------------------------------------------------------------------- the published model


NAMES_1_TO_10 = tuple(str(i) for i in range(1, 11))


def _bundle(tmp: Path, class_names: tuple[str, ...]) -> Path:
    cfg = ModelConfig(arch="mlp", conditional=True, g_hidden=(16,), d_hidden=(16,),
                      latent_dim=8, num_classes=len(class_names))
    torch.manual_seed(0)
    G, D = build(cfg)
    return mm.write_bundle(tmp / "b", cfg, G.eval(), D,
                           meta={"class_names": list(class_names)})


def test_published_model_takes_the_datas_own_labels(tmp_path: Path) -> None:
    """A consumer asking for label 7 of a 1..10 set gets the class named "7" (index 6)."""
    model = portable._load_pyfunc(str(_bundle(tmp_path, NAMES_1_TO_10)))
    G = model.generator
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = G(z, torch.tensor([6, 6, 0])).numpy()
    for y in ([7, 7, 1], ["7", "7", "1"], np.array([7, 7, 1])):
        assert np.array_equal(model.predict({"z": z.numpy(), "y": y}), want), y
    with pytest.raises(portable.GeneratorFormatError, match=r"label 0 is not one of this "
                                                            r"model's labels \(1, 2, .*, 10\)"):
        model.predict({"n": 2, "y": [0, 1]})
    req = model.predict({"n": 2, "seed": 0, "y": 10})  # one label for all: class "10"
    assert req.shape == (2, 1, 28, 28)
    doc = json.loads((tmp_path / "b" / mm.CONFIG_FILE).read_text())
    assert doc["class_names"] == list(NAMES_1_TO_10)


def test_string_labels_by_name_and_index(tmp_path: Path) -> None:
    model = portable._load_pyfunc(str(_bundle(tmp_path, ("cat", "dog"))))
    z = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    by_name = model.predict({"z": z, "y": ["dog", "cat"]})
    assert np.array_equal(by_name, model.predict({"z": z, "y": [1, 0]}))
    with pytest.raises(portable.GeneratorFormatError, match=r"'cow' is not one of this "
                                                            r"model's labels \(cat, dog\)"):
        model.predict({"z": z, "y": ["cow", "cat"]})


def test_signature_metadata_and_card_name_the_labels(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, NAMES_1_TO_10)
    kwargs = mm._pyfunc_kwargs(bundle, None)
    assert kwargs["metadata"]["class_names"] == list(NAMES_1_TO_10)
    # the data's labels, not indices
    assert kwargs["metadata"]["request_example"]["y"] == [1, 2, 3, 4]
    dataset = DatasetRef(name="from1", version="0" * 16, uri="s3://b/d/", source="npz:x.npz",
                         n_train=1437, n_holdout=360, num_classes=10, image_size=8,
                         class_names=list(NAMES_1_TO_10))
    report = Report(run_id="r", dataset_version="0" * 16, metrics={"fid": 1.0}, floors={},
                    ceilings={}, class_hist=[0.1] * 10, classes_covered=10,
                    judge_accuracy=0.9, n_samples=10, report_uri="s3://x/r.json",
                    markdown_uri="s3://x/r.md")
    card = model_card(name="gan-from1", version="1", report=report, dataset=dataset,
                      params={"model": ModelConfig(conditional=True)}, decision=None,
                      run_id="r")
    assert "| classes | 10: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 |" in card
    assert 'g.predict({"n": 64, "seed": 0, "y": [1] * 64})' in card  # the data's labels


@pytest.mark.parametrize(("names", "ask", "index"),
                         [(NAMES_1_TO_10, [7, 7], 6), (("cat", "dog"), ["dog", "dog"], 1)],
                         ids=["1..10", "names"])
def test_saved_model_through_mlflow_takes_the_datas_labels(
        tmp_path: Path, names: tuple[str, ...], ask: list, index: int) -> None:
    """Through MLflow's pyfunc, whose schema check refused names in an integer column."""
    import mlflow

    bundle = _bundle(tmp_path, names)
    model = mlflow.pyfunc.load_model(str(mm.save_bundle_model(tmp_path / "m", bundle)))
    assert model.metadata.metadata["class_names"] == list(names)
    G = portable.load_generator(bundle)
    z = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    with torch.no_grad():
        want = G(torch.from_numpy(z), torch.tensor([index, index])).numpy()
    np.testing.assert_allclose(model.predict({"z": z, "y": ask}), want, atol=1e-6)
