"""The label-free judge measured: its quality per dataset and quick disturbance checks.

What this module is: the reproducible study behind the label-free judge's recipe and its
figures. `quality` trains, per dataset, the label-free judge (its data-sized recipe), the same
network untrained, an encoder that sees colour only and, where labels exist, the classifier
judge, and prints one JSON row each (5-NN holdout accuracy, view retrieval, separation, CPU
and wall seconds).
`disturb` trains one label-free judge and prints the FID, in its feature space, between the
holdout and train images disturbed with growing strength (blur, pixel noise, colour shift, hue
rotation, patch shuffle); strength 0 is the real-data floor.

    python -m gan.tools.ssl_study quality --data digits,painted-600,painted-1800,shapes
    python -m gan.tools.ssl_study disturb --data painted-1800

Data: `digits` (the bundled scikit-learn digits), `painted-N` (N painted digits,
`gan.data.painted`, labelled, seed 0), `shapes` (the bundled RGB set, `gan.data.shapes`), each
prepared as `gan retrain` prepares it (PNG files through `--source images`).

What it is not: the formal validation harness (checkpoint ordering against a reference, the
disturbance tests in `make test`); nothing here is imported by the pipeline.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

import torch

from gan.core.config import DataConfig
from gan.data.painted import write_painted
from gan.data.prepare import PreparedData, prepare_arrays
from gan.data.shapes import write_shapes
from gan.eval import metrics as M
from gan.eval.judge import train_judge
from gan.eval.ssl_augment import gaussian_blur, hsv_to_rgb, rgb_to_hsv
from gan.eval.ssl_judge import SSLJudge, set_feature_scale, ssl_quality, train_ssl_judge
from gan.eval.ssl_train import ssl_recipe
from gan.nets.ssl_net import SSLNet

Disturb = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def load(name: str) -> PreparedData:
    """A dataset by study name (see the module docstring), prepared in memory."""
    if name == "digits":
        return prepare_arrays(DataConfig(source="digits"))
    with tempfile.TemporaryDirectory() as tmp:
        if name == "shapes":
            write_shapes(tmp)
        elif name.startswith("painted-"):
            write_painted(tmp, n=int(name.removeprefix("painted-")), seed=0)
        else:
            raise SystemExit(f"unknown --data {name!r}: digits, painted-N or shapes")
        return prepare_arrays(DataConfig(source="images", uri=tmp, name=name))


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def untrained(data: PreparedData, seed: int = 0) -> SSLJudge:
    """The label-free judge's network at its initialisation, measured alike."""
    recipe = ssl_recipe(len(data.x_train), data.image_shape[0], data.image_shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SSLNet(recipe.arch(data.image_shape[0], data.image_shape[1])).eval()
    set_feature_scale(net, data.x_train)
    judge = SSLJudge(net=net, quality={}, dataset_version=data.version, seed=seed, epochs=0)
    judge.quality = ssl_quality(judge, data)
    return judge


class _MeanColour(torch.nn.Module):
    """(B, C, H, W) → (B, F): a fixed random map of each image's mean colour and its spread —
    an encoder that sees colour only, the blind spot the quality check must refuse."""

    def __init__(self, channels: int, feature_dim: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(2 * channels, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)  # (B, 2C)
        return torch.relu(self.proj(stats))


def colour_only(data: PreparedData, seed: int = 0) -> SSLJudge:
    """The label-free judge's network with its body swapped for `_MeanColour`, measured alike."""
    judge = untrained(data, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge.net.body = _MeanColour(data.image_shape[0], judge.net.arch.feature_dim)
    set_feature_scale(judge.net, data.x_train)
    judge.quality = ssl_quality(judge, data)
    return judge


def quality_rows(name: str, epochs: int | None, seed: int) -> list[dict[str, object]]:
    data = load(name)
    base = {"data": name, "n_train": len(data.x_train), "shape": list(data.image_shape)}
    judge, cpu, wall = _timed(lambda: train_ssl_judge(data, epochs, seed))
    assert isinstance(judge, SSLJudge)
    rows = [{**base, "judge": "label-free", "epochs": judge.epochs,
             "batch": judge.recipe.batch_size if judge.recipe else None, **judge.quality,
             "cpu_s": round(cpu, 1), "wall_s": round(wall, 1)},
            {**base, "judge": "untrained", **untrained(data, seed).quality},
            {**base, "judge": "colour-only", **colour_only(data, seed).quality}]
    if data.labelled and data.num_classes >= 2:
        clf, cpu, wall = _timed(lambda: train_judge(data, 15, seed))
        rows.append({**base, "judge": "classifier", "epochs": 15,
                     "holdout_accuracy": clf.accuracy,  # type: ignore[attr-defined]
                     "cpu_s": round(cpu, 1), "wall_s": round(wall, 1)})
    return rows


# --------------------------------------------------------------------------- disturbances


def _blur(x: torch.Tensor, s: float, gen: torch.Generator) -> torch.Tensor:
    return gaussian_blur(x, torch.full((len(x),), s), taps=7) if s > 0 else x


def _noise(x: torch.Tensor, s: float, gen: torch.Generator) -> torch.Tensor:
    return (x + s * torch.randn(x.shape, generator=gen)).clamp(-1, 1)


def _colour_shift(x: torch.Tensor, s: float, gen: torch.Generator) -> torch.Tensor:
    """A fixed cast: the first channel up by s, the last down by s (grey: brighter)."""
    shift = torch.tensor([s, 0.0, -s][: x.shape[1]] if x.shape[1] == 3 else [s])
    return (x + shift.view(1, -1, 1, 1)).clamp(-1, 1)


def _hue(x: torch.Tensor, s: float, gen: torch.Generator) -> torch.Tensor:
    """Hue turned by s turns, each image the same (a recolouring; shapes kept)."""
    if x.shape[1] == 1 or s == 0:
        return x
    hsv = rgb_to_hsv((x + 1) / 2)
    hsv = torch.stack([(hsv[:, 0] + s) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
    return hsv_to_rgb(hsv) * 2 - 1


def _shuffle(x: torch.Tensor, s: float, gen: torch.Generator) -> torch.Tensor:
    """A share s of each image's 4×4 grid of patches swapped among themselves (shape lost)."""
    b, c, h, w = x.shape
    p = h // 4
    tiles = x[:, :, : 4 * p, : 4 * p].unfold(2, p, p).unfold(3, p, p)  # (B, C, 4, 4, p, p)
    tiles = tiles.reshape(b, c, 16, p, p).clone()
    n = round(s * 16)
    if n >= 2:
        for i in range(b):
            pick = torch.randperm(16, generator=gen)[:n]
            tiles[i, :, pick] = tiles[i, :, pick[torch.randperm(n, generator=gen)]]
    out = x.clone()
    grid = tiles.reshape(b, c, 4, 4, p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, c, 4 * p, 4 * p)
    out[:, :, : 4 * p, : 4 * p] = grid
    return out


DISTURBANCES: dict[str, tuple[Disturb, tuple[float, ...]]] = {
    "blur": (_blur, (0.0, 0.5, 1.0, 1.5, 2.0)),
    "noise": (_noise, (0.0, 0.05, 0.1, 0.2, 0.4)),
    "colour_shift": (_colour_shift, (0.0, 0.1, 0.2, 0.4, 0.8)),
    "hue_rotation": (_hue, (0.0, 0.1, 0.25, 0.5)),
    "patch_shuffle": (_shuffle, (0.0, 0.25, 0.5, 1.0)),
}


def disturb_rows(name: str, epochs: int | None, seed: int) -> list[dict[str, object]]:
    data = load(name)
    judge = train_ssl_judge(data, epochs, seed)
    feat = judge.feature_module()
    hold = data.x_holdout.float()
    gen = torch.Generator().manual_seed(seed)
    train = data.x_train[torch.randperm(len(data.x_train), generator=gen)[: len(hold)]].float()
    rows = []
    for kind, (fn, strengths) in DISTURBANCES.items():
        for s in strengths:
            fake = fn(train, s, torch.Generator().manual_seed(seed))
            rows.append({"data": name, "disturbance": kind, "strength": s,
                         "fid": round(M.fid(feat, hold, fake), 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gan.tools.ssl_study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("quality", "disturb"))
    ap.add_argument("--data", default="digits,painted-600,painted-1800,shapes")
    ap.add_argument("--epochs", type=int, default=None, help="empty: the data-sized recipe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows_of = quality_rows if args.what == "quality" else disturb_rows
    for name in args.data.split(","):
        for row in rows_of(name, args.epochs, args.seed):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
