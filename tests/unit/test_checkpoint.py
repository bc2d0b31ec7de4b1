"""gan.train.checkpoint: self-describing round trip, weights-only loading, pickles refused."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from gan.core.config import ModelConfig, TrainConfig
from gan.data.prepare import PreparedData
from gan.nets.models import sample_latent
from gan.train.checkpoint import (
    CheckpointError,
    discriminator_from_checkpoint,
    generator_from_checkpoint,
    load_checkpoint,
    model_config,
    save_checkpoint,
)
from gan.train.loop import train_local

torch.set_num_threads(1)

CDCGAN = ModelConfig(arch="dcgan", conditional=True, spectral_norm=True, latent_dim=8,
                     image_size=8, base_channels=4, num_classes=4)


@pytest.fixture(scope="module")
def trained():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 8, 8, generator=g) * 2 - 1
    y = torch.arange(32) % 4
    data = PreparedData(x, y, x[:4], y[:4], num_classes=4, name="t", version="abc123")
    return train_local(data, CDCGAN, TrainConfig(epochs=1, batch_size=8, ema_decay=0.9))


def test_round_trip_gives_identical_outputs(trained, tmp_path: Path) -> None:
    blob = save_checkpoint(trained)
    path = tmp_path / "ckpt.pt"
    path.write_bytes(blob)
    for source in (blob, path, str(path)):
        ckpt = load_checkpoint(source)
        assert ckpt["epoch"] == 1 and ckpt["step"] == 4 and ckpt["dataset_version"] == "abc123"
        assert model_config(ckpt) == CDCGAN
        z = sample_latent(5, 8, torch.Generator().manual_seed(1))
        y = torch.tensor([0, 1, 2, 3, 0])
        with torch.no_grad():
            g_raw = generator_from_checkpoint(ckpt, use_ema=False)
            g_ema = generator_from_checkpoint(ckpt)  # the EMA copy by default
            assert not g_raw.training and not g_ema.training
            assert torch.equal(g_raw(z, y), trained.G.eval()(z, y))
            assert torch.equal(g_ema(z, y), trained.G_ema(z, y))
            assert not torch.equal(g_ema(z, y), g_raw(z, y))
            d = discriminator_from_checkpoint(ckpt)
            x = g_raw(z, y)
            assert torch.equal(d(x, y), trained.D.eval()(x, y))
    trained.G.train(), trained.D.train()


def test_checkpoint_holds_only_tensors_and_primitives(trained) -> None:
    raw = torch.load(io.BytesIO(save_checkpoint(trained)), weights_only=True)
    assert raw["format"] == "gan-checkpoint/1"
    assert raw["model_config"]["arch"] == "dcgan" and isinstance(raw["model_config"]["g_hidden"],
                                                                 list)
    assert raw["train_config"]["epochs"] == 1 and raw["history"][0]["epoch"] == 1
    for key in ("generator", "discriminator", "generator_ema", "opt_g", "opt_d"):
        assert raw[key]


class _Evil:
    """Unpickling this would create a file: proof of code execution."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_arbitrary_objects_are_refused(trained, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    ckpt = torch.load(io.BytesIO(save_checkpoint(trained)), weights_only=True)
    ckpt["payload"] = evil
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    with pytest.raises(CheckpointError, match="refused: it holds objects .*GLOBAL .*system"):
        load_checkpoint(buf.getvalue())
    assert not marker.exists()


def test_foreign_or_broken_files_are_named(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buf)
    with pytest.raises(CheckpointError, match="not a gan-checkpoint/1 checkpoint"):
        load_checkpoint(buf.getvalue())
    buf = io.BytesIO()
    torch.save({"format": "gan-checkpoint/1", "epoch": 1}, buf)
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(buf.getvalue())
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="missing.pt: cannot read"):
        load_checkpoint(tmp_path / "missing.pt")
