"""The painted-digits colour set: seeded, disjoint run/reference glyphs, colour independent of
the class, PNG folders (labelled and flat) and the `gan data make-painted` command."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from typer.testing import CliRunner

from gan.cli.main import app
from gan.core.config import DataConfig
from gan.data.painted import CLASSES, glyph_split, render_painted, write_painted
from gan.data.prepare import prepare_arrays


def test_render_is_seeded_rgb_and_covers_every_digit():
    x, y = render_painted(60, seed=3)
    assert x.shape == (60, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    x2, y2 = render_painted(60, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, render_painted(60, seed=4)[0])
    assert set(y.tolist()) == set(range(10))
    # colour images: the channels differ (not grey repeated)
    assert np.abs(x[..., 0].astype(int) - x[..., 1]).mean() > 10


def test_run_and_reference_glyphs_are_disjoint_halves():
    run, y_run = glyph_split("run")
    ref, y_ref = glyph_split("reference")
    assert len(run) + len(ref) == len(load_digits().target)
    assert abs(len(run) - len(ref)) <= 10
    assert np.bincount(y_run).min() >= 85 and np.bincount(y_ref).min() >= 85  # stratified
    flat_run = {g.tobytes() for g in run}
    assert not any(g.tobytes() in flat_run for g in ref)  # no glyph in both halves
    with pytest.raises(ValueError, match="part must be one of"):
        glyph_split("test")  # type: ignore[arg-type]


def test_colour_alone_does_not_tell_the_class():
    """Per-image colour statistics (mean and std of each channel) classify at chance level."""
    x, y = render_painted(400, seed=0)
    f = x.reshape(len(x), -1, 3).astype(np.float32)
    stats = np.concatenate([f.mean(1), f.std(1)], axis=1)  # (N, 6)
    acc = cross_val_score(KNeighborsClassifier(5), stats, y, cv=4).mean()
    assert acc < 0.2, acc  # chance 0.1


def test_written_folders_read_back_labelled_and_flat(tmp_path):
    paths = write_painted(tmp_path / "lab", n=60, seed=1)
    assert len(paths) == 60 and {p.parent.name for p in paths} <= set(CLASSES)
    data = prepare_arrays(DataConfig(source="images", uri=str(tmp_path / "lab")))
    assert data.labelled and data.image_shape == (3, 32, 32)
    assert data.class_names == tuple(sorted({p.parent.name for p in paths}))
    flat = write_painted(tmp_path / "flat", n=12, seed=1, flat=True)
    assert {p.parent for p in flat} == {tmp_path / "flat"}
    with pytest.raises(FileExistsError, match="not empty"):
        write_painted(tmp_path / "flat", n=2)


def test_cli_make_painted(tmp_path):
    r = CliRunner().invoke(app, ["data", "make-painted", str(tmp_path / "p"), "--n", "20",
                                 "--reference", "--flat"])
    assert r.exit_code == 0, r.output
    assert "wrote 20 PNG files" in r.output and "reference glyphs" in r.output
    assert len(list((tmp_path / "p").glob("*.png"))) == 20
    again = CliRunner().invoke(app, ["data", "make-painted", str(tmp_path / "p"), "--n", "2"])
    assert again.exit_code == 2 and "not empty" in again.output
