"""How small a share of copied training images the copy rule catches: a study on digits.

What this module is: `PlantedCopies`, a stand-in generator whose samples are a given share of
verbatim training images and otherwise fresh images (holdout images, never trained on), and
`python -m gan.tools.copy_study`, which prepares the digits (default split: ≈ 360 holdout
images), trains the classifier judge as the pipeline does, evaluates `PlantedCopies` over a
sweep of shares on one or more evaluation seeds, and prints per share C_T, the distance ratio
and the gate's copy verdict, then the smallest share the gate fails on every seed. With
`--recipe-epochs N` it also trains the default recipe for N epochs and scores its samples: a
real generator's figures beside the planted ones.

    python -m gan.tools.copy_study                       # shares 0..0.5, eval seeds 1234,1,2
    python -m gan.tools.copy_study --recipe-epochs 100   # + the default recipe (minutes)

What it is not: no assertions (tests/unit/test_copy_rule.py asserts on `PlantedCopies`), no
storage; nothing here is imported by the pipeline.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gan.core.config import DataConfig, EvalConfig, GateConfig, resolve_configs
from gan.core.model_fit import fit_model_to_data
from gan.core.records import DatasetRef, Report
from gan.data.prepare import PreparedData, prepare_arrays
from gan.eval.evaluate import compute_floors, evaluate_generator, gate
from gan.eval.judge import Judge, train_judge
from gan.train.loop import train_local

DEFAULT_SHARES = (0.0, 0.05, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.5)


class PlantedCopies(nn.Module):
    """A `fraction` of the samples are verbatim training images, the rest fresh holdout images
    (a sampler of the data distribution that never saw the training split). z's first
    coordinate picks the image, its second whether it is a copy: deterministic in z."""

    conditional = False

    def __init__(self, data: PreparedData, fraction: float) -> None:
        super().__init__()
        self.latent_dim, self.fraction = 8, fraction
        self.copies, self.fresh = data.x_train.float(), data.x_holdout.float()

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        u, v = torch.special.ndtr(z[:, 0]), torch.special.ndtr(z[:, 1])  # (B,) uniform
        copy = v < self.fraction  # (B,)
        pick_t = (u * len(self.copies)).long().clamp(max=len(self.copies) - 1)
        pick_f = (u * len(self.fresh)).long().clamp(max=len(self.fresh) - 1)
        return torch.where(copy[:, None, None, None], self.copies[pick_t], self.fresh[pick_f])


def copy_lines(result: dict, gate_cfg: GateConfig = GateConfig()) -> list[str]:
    """The gate's copy-rule lines for an `evaluate_generator` result."""
    report = Report(run_id="study", dataset_version="v", report_uri="s3://x/r.json",
                    markdown_uri="s3://x/r.md", **result)
    return [r for r in gate(report, None, gate_cfg).reasons if "copy" in r]


def _row(name: str, result: dict) -> tuple[str, bool]:
    m, lines = result["metrics"], copy_lines(result)
    failed = any(r.startswith("FAIL") for r in lines)
    print(f"  {name:>22}  C_T {m['copy_ct']:7.2f} ± {result['spread']['copy_ct']:.2f}  "
          f"ratio {m['copy_distance_ratio']:.3f}  {'FAIL' if failed else 'pass'}", flush=True)
    return name, failed


def _recipe(data: PreparedData, judge: Judge, cfg: EvalConfig, floors: dict,
            epochs: int) -> None:
    """The default recipe trained `epochs` on the train split, its EMA G scored alike."""
    model_cfg, train_cfg = resolve_configs("default", train={"epochs": epochs})
    ref = DatasetRef(name=data.name, version=data.version, uri="memory://", source=data.source,
                     n_train=len(data.x_train), n_holdout=len(data.x_holdout),
                     num_classes=data.num_classes, image_size=data.image_shape[-1],
                     channels=data.image_shape[0])
    state = train_local(data, fit_model_to_data(model_cfg, ref), train_cfg)
    result, _ = evaluate_generator(state.generator.eval(), data, judge, cfg, floors=floors)
    _row(f"default recipe {epochs} ep", result)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shares", default=",".join(map(str, DEFAULT_SHARES)))
    ap.add_argument("--eval-seeds", default="1234,1,2", help="EvalConfig.seed of each sweep")
    ap.add_argument("--judge-epochs", type=int, default=EvalConfig().judge_epochs)
    ap.add_argument("--recipe-epochs", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = prepare_arrays(DataConfig())
    judge = train_judge(data, args.judge_epochs, seed=0)
    shares = [float(s) for s in args.shares.split(",")]
    print(f"digits: {len(data.x_train)} train, {len(data.x_holdout)} holdout; judge accuracy "
          f"{judge.accuracy:.3f}; gate {GateConfig().min_copy_ct} / "
          f"{GateConfig().min_copy_distance_ratio}")
    caught: list[set[float]] = []
    for seed in (int(s) for s in args.eval_seeds.split(",")):
        cfg = EvalConfig(seed=seed)
        floors = compute_floors(judge, data, cfg)
        print(f"eval seed {seed} ({cfg.n_seeds} latent seeds × "
              f"{max(len(data.x_holdout), 1000)} samples):")
        failed = {share for share in shares
                  if _row(f"planted {share:.1%}", evaluate_generator(
                      PlantedCopies(data, share), data, judge, cfg, floors=floors)[0])[1]}
        caught.append(failed)
        if args.recipe_epochs:
            _recipe(data, judge, cfg, floors, args.recipe_epochs)
    always = set.intersection(*caught)
    print("smallest share failed on every eval seed:",
          f"{min(always):.1%}" if always else "none")


if __name__ == "__main__":
    main()
