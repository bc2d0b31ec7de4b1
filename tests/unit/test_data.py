"""gan.data (sources, validate, prepare): sources, validation errors, split, version. Real IDX/npz
files written here."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.core.config import DataConfig
from gan.data.prepare import prepare_arrays
from gan.data.sources import CANONICAL, load_source, read_idx
from gan.data.validate import DataError

torch.set_num_threads(1)

N_TRAIN, N_TEST = 40, 20  # 4 + 2 images per class


def idx_gz(arr: np.ndarray, magic: int | None = None) -> bytes:
    """A real gzipped unsigned-byte IDX file (big-endian header, as LeCun's format says)."""
    magic = (0x0800 | arr.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def mnist_like(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixel [0, 0] is their global index (so each one can be found again)."""
    rng = np.random.default_rng(offset)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    x[:, 0, 0] = np.arange(offset, offset + n)
    return x, np.arange(n) % 10


def write_idx_folder(folder: Path, **override: bytes) -> Path:
    xt, yt = mnist_like(N_TRAIN)
    xs, ys = mnist_like(N_TEST, offset=N_TRAIN)
    files = {
        "train-images-idx3-ubyte.gz": idx_gz(xt), "train-labels-idx1-ubyte.gz": idx_gz(yt),
        "t10k-images-idx3-ubyte.gz": idx_gz(xs), "t10k-labels-idx1-ubyte.gz": idx_gz(ys),
    }
    files.update({k.replace("_", "-") + ".gz": v for k, v in override.items()})
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------- sources


def test_digits_default_is_28px_scaled_split_and_versioned() -> None:
    d = prepare_arrays(DataConfig())
    # the split by pixel hash (gan.data.split), pinned: 1,797 images, no duplicates
    assert d.x_train.shape == (1438, 1, 28, 28) and d.x_holdout.shape == (359, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert float(d.x_train.min()) == -1.0 and float(d.x_train.max()) == 1.0
    assert d.num_classes == 10 and d.name == "digits"
    assert len(d.version) == 16 and int(d.version, 16) >= 0
    # Every class keeps about the same share in both splits (binomial: 0.2 ± 0.03 a class).
    tr, ho = np.array(d.class_hist("train")), np.array(d.class_hist("holdout"))
    assert np.all(np.abs(ho / (tr + ho) - 0.2) < 0.06)


def test_mnist_folder_concatenates_train_and_t10k_without_resizing(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "mnist")
    src = load_source(DataConfig(source="mnist", uri=str(folder)))
    x, y = src.x[:, 0], src.y  # (N, 1, 28, 28): one channel
    assert src.x.shape == (N_TRAIN + N_TEST, 1, 28, 28) and x.dtype == np.uint8
    assert y.tolist() == (list(np.arange(N_TRAIN) % 10) + list(np.arange(N_TEST) % 10))
    d = prepare_arrays(DataConfig(source="mnist", uri=str(folder)))
    # 10 of 60 held out: pinned, the split by pixel hash of these images (binomial 12 ± 3)
    assert len(d.y_train) + len(d.y_holdout) == N_TRAIN + N_TEST and len(d.y_holdout) == 10
    # Every prepared image is exactly one source image (u8 → [-1, 1] is exact, no resize).
    both = torch.cat([d.x_train, d.x_holdout])
    ids = ((both[:, 0, 0, 0] + 1) * 127.5).round().long()
    assert sorted(ids.tolist()) == list(range(N_TRAIN + N_TEST))
    src = torch.from_numpy(x[ids.numpy()]).float() / 127.5 - 1
    assert torch.equal(both[:, 0], src)


def test_non_canonical_file_skips_md5_with_a_note(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    folder = write_idx_folder(tmp_path / "m")
    with caplog.at_level(logging.INFO, logger="gan.data.validate"):
        load_source(DataConfig(source="fashion-mnist", uri=str(folder)))
    assert "MD5 check skipped" in caplog.text and "t10k-labels-idx1-ubyte.gz" in caplog.text


@pytest.mark.parametrize("source", ["mnist", "fashion-mnist"])
def test_canonical_name_and_size_with_wrong_md5_is_an_error(tmp_path: Path, source: str) -> None:
    size, md5 = CANONICAL[source]["t10k-labels-idx1-ubyte.gz"]
    folder = write_idx_folder(tmp_path / source, t10k_labels_idx1_ubyte=b"\x1f" * size)
    with pytest.raises(DataError, match=f"t10k-labels-idx1-ubyte.gz.*MD5.*{md5}"):
        load_source(DataConfig(source=source, uri=str(folder)))


def test_base_url_source_over_http(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "served")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        src = load_source(DataConfig(source="mnist", uri=base))
        assert src.x.shape == (N_TRAIN + N_TEST, 1, 28, 28)
        with pytest.raises(DataError, match="download failed"):
            load_source(DataConfig(source="mnist", uri=base + "missing/"))
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        pass


def test_npz_uint8_float_and_unlabelled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 8, 8), dtype=np.uint8)
    y = np.arange(30) % 3
    d = prepare_arrays(DataConfig(source="npz", uri=str(write_npz(tmp_path / "a.npz", x=x, y=y)),
                                  image_size=16))
    assert d.x_train.shape[1:] == (1, 16, 16) and d.num_classes == 3 and d.name == "a"
    xf = (x[:, None] / 127.5 - 1.0).astype(np.float32)  # (N, 1, H, W) float in [-1, 1]
    df = prepare_arrays(DataConfig(source="npz", uri=str(write_npz(tmp_path / "b.npz", x=xf, y=y)),
                                   image_size=16))
    assert torch.allclose(df.x_train, d.x_train, atol=2 / 255)
    du = prepare_arrays(DataConfig(source="npz", uri=str(write_npz(tmp_path / "c.npz", x=x)),
                                   image_size=8))
    assert du.num_classes == 1 and set(du.y_train.tolist()) == {0}


def test_limit_keeps_a_class_proportional_subset() -> None:
    d = prepare_arrays(DataConfig(limit=50))
    assert len(d.y_train) + len(d.y_holdout) == 50
    assert set(d.y_train.tolist()) == set(range(10))


def test_s3_source_without_storage_is_refused() -> None:
    with pytest.raises(DataError, match="needs object storage"):
        load_source(DataConfig(source="npz", uri="s3://bucket/x.npz"), None)


# --------------------------------------------------------------------------- malformed input


def _gz_truncated() -> bytes:
    return idx_gz(mnist_like(N_TRAIN)[0])[:-40]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train_images_idx3_ubyte": _gz_truncated()}, "truncated or corrupt gzip"),
        ({"train_images_idx3_ubyte": b""}, "empty"),
        ({"train_images_idx3_ubyte": b"not gzip at all"}, "truncated or corrupt gzip"),
        ({"train_images_idx3_ubyte": idx_gz(mnist_like(N_TRAIN)[0], magic=0x0801)},
         "wrong IDX magic number 0x00000801"),
        ({"train_labels_idx1_ubyte": idx_gz(np.arange(N_TRAIN) % 10, magic=0x0803)},
         "wrong IDX magic number 0x00000803, expected 0x00000801"),
        ({"t10k_labels_idx1_ubyte": idx_gz(np.arange(N_TEST - 1) % 10)}, "20 images but"),
        ({"t10k_labels_idx1_ubyte": idx_gz(np.full(N_TEST, 10))}, r"labels must lie in \[0, 9\]"),
        ({"t10k_images_idx3_ubyte": gzip.compress((0x0803).to_bytes(4, "big") + bytes(3))},
         "truncated IDX header"),
    ],
    ids=["truncated-gz", "empty", "not-gzip", "wrong-magic-images", "wrong-magic-labels",
         "count-mismatch", "label-range", "short-header"],
)
def test_malformed_idx(tmp_path: Path, override: dict[str, bytes], message: str) -> None:
    folder = write_idx_folder(tmp_path / "bad", **override)
    with pytest.raises(DataError, match=message) as err:
        load_source(DataConfig(source="mnist", uri=str(folder)))
    assert str(folder) in str(err.value)  # the message names the file (or folder)


def test_idx_payload_shorter_or_longer_than_its_dims() -> None:
    raw = gzip.decompress(idx_gz(np.zeros((4, 5, 5))))
    with pytest.raises(DataError, match="f.gz: truncated: dims \\[4, 5, 5\\] need 100"):
        read_idx(gzip.compress(raw[:-1]), "f.gz", 3)
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(gzip.compress(raw + b"\0"), "f.gz", 3)


def test_missing_idx_file_names_it(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "m")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_source(DataConfig(source="mnist", uri=str(folder)))


_X = np.zeros((20, 8, 8), dtype=np.uint8)
_Y = np.arange(20) % 2


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": _X}, "no array 'x'"),
        ({"x": np.zeros((20, 64), np.uint8)},
         r"must be \(N, H, W\), \(N, C, H, W\) or \(N, H, W, C\) with C = 1 or 3"),
        ({"x": np.zeros((20, 2, 8, 8), np.uint8)}, r"got shape \(20, 2, 8, 8\)"),
        ({"x": np.zeros((0, 8, 8), np.uint8)}, "no usable images"),
        ({"x": np.where(np.eye(8) > 0, np.nan, 0.5)[None].repeat(20, 0)}, "NaN/inf"),
        ({"x": np.full((20, 8, 8), np.inf, np.float32)}, "NaN/inf"),
        ({"x": np.full((20, 8, 8), 1.5, np.float32)}, r"must lie in \[-1, 1\], found \[1.5"),
        ({"x": np.full((20, 8, 8), -1.5, np.float32)}, r"\[-1, 1\]"),
        ({"x": _X.astype(np.int64)}, "dtype int64 not supported"),
        ({"x": np.arange(1001 * 4, dtype=np.uint32).view(np.uint8).reshape(1001, 4, 4),
          "y": np.arange(1001) * 3 - 7}, "1001 distinct labels, more than the 1000 classes"),
        ({"x": _X, "y": _Y.astype(np.float32)}, "labels must be integers"),
        ({"x": _X, "y": _Y[:-1]}, r"labels must be \(N,\) = \(20,\)"),
        ({"x": _X, "y": _Y - 1}, "class '-1' has no image left: each of its images is an "
                                 "exact copy of an image labelled otherwise"),
    ],
    ids=["missing-x", "ndim-2", "two-channels", "no-images", "nan", "inf", "above-1",
         "below-minus-1", "int64-images", "too-many-classes", "float-labels",
         "count-mismatch", "one-picture-two-labels"],
)
def test_malformed_npz(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as err:
        prepare_arrays(DataConfig(source="npz", uri=str(path), image_size=8))
    assert "bad.npz" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x00" * 64],
                         ids=["empty", "truncated-zip", "garbage"])
def test_unreadable_npz(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="broken.npz: (file is empty|not a readable .npz)"):
        load_source(DataConfig(source="npz", uri=str(path)))


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.array([object()] * 3, dtype=object))
    path = tmp_path / "obj.npz"
    path.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="obj.npz: not a readable .npz"):
        load_source(DataConfig(source="npz", uri=str(path)))


# --------------------------------------------------------------------------- version


_VERSION_SCRIPT = (
    "from gan.core.config import DataConfig; from gan.data.prepare import prepare_arrays; "
    "import sys; print(prepare_arrays(DataConfig(source='npz', uri=sys.argv[1], "
    "image_size=12)).version)"
)


def test_version_is_stable_across_processes_and_follows_data_and_config(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    y = np.arange(40) % 4
    path = write_npz(tmp_path / "v.npz", x=x, y=y)
    cfg = DataConfig(source="npz", uri=str(path), image_size=12)
    v = prepare_arrays(cfg).version
    assert prepare_arrays(cfg).version == v
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", _VERSION_SCRIPT, str(path)], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == v
    # Moving the file does not change the version; changing one pixel or a prep knob does.
    moved = write_npz(tmp_path / "elsewhere.npz", x=x, y=y)
    assert prepare_arrays(cfg.model_copy(update={"uri": str(moved)})).version == v
    x2 = x.copy()
    x2[0, 0, 0] ^= 0xFF
    changed = write_npz(tmp_path / "changed.npz", x=x2, y=y)
    versions = {
        prepare_arrays(cfg.model_copy(update={"uri": str(changed)})).version,
        prepare_arrays(cfg.model_copy(update={"split_seed": 1})).version,
        prepare_arrays(cfg.model_copy(update={"image_size": 16})).version,
        prepare_arrays(cfg.model_copy(update={"holdout_fraction": 0.25})).version,
        prepare_arrays(cfg.model_copy(update={"limit": 36})).version,
    }
    assert v not in versions and len(versions) == 5


def test_npz_source_reads_what_gan_sample_writes(tmp_path: Path) -> None:
    """`gan sample --npz` output (float [-1, 1], labels) is a valid `--source npz` input, and
    its pixels survive the round trip (to uint8 and back) within one quantisation step."""
    from gan.apps.sampling import generate, write_npz
    from gan.core.config import ModelConfig
    from gan.nets.models import build_generator

    torch.manual_seed(0)
    g = build_generator(ModelConfig(arch="dcgan", conditional=True, base_channels=8,
                                    latent_dim=8))
    samples = generate(g, 40, seed=1)
    d = prepare_arrays(DataConfig(source="npz", uri=str(write_npz(samples, tmp_path / "s.npz")),
                                  holdout_fraction=0.25))
    x = torch.cat([d.x_train, d.x_holdout])
    assert x.shape[1:] == samples.x.shape[1:] and d.num_classes == 10
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert abs(float(x.mean()) - float(samples.x.mean())) < 2 / 255
