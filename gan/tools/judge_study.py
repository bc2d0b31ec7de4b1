"""Judge study: the judges validated at full size on three datasets, written as tables.

What this module is: the full-size run of the checks the unit tests make at small sizes
(`tests/unit/test_judge_validation_*.py`): for each dataset — the bundled grey digits, the
painted colour digits (`gan.data.painted`) and the bundled RGB shapes (`gan.data.shapes`) —
it trains the judges a run would use (the classifier judge, the label-free judge) and two
controls that should fail (colour-only features, an untrained network), a reference
classifier on ten times more labelled images than the run sees (digits: all 1,797) and a
second reference with another training seed (the reference's own noise), then
  - sweeps every disturbance of `gan.eval.disturb` over its strengths (FID, copy statistic);
  - trains one run's checkpoint ladder (`gan.eval.ordering.train_ladder`) and scores it with
    every judge and both references; Kendall τ against the reference over the pairs both
    references separate the same way beyond their sampling noise;
and writes `<out>/<dataset>.json` and `<out>/judge_study.md` (every table, with the date,
commit and machine). Datasets can be run one per call (`--datasets painted`); the tables are
rebuilt from every `<out>/*.json` found.

    python -m gan.tools.judge_study --out out/judge_study              # all three, full size
    python -m gan.tools.judge_study --datasets digits --quick          # seconds-to-minutes
    python -m gan.tools.judge_study --table-only --out out/judge_study

What it is not: no pipeline stage, no storage or MLflow; the checks' logic is in
`gan.eval.validation` / `gan.eval.ordering`, the tables in `gan.tools.judge_tables`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from gan.core.config import DataConfig, EvalConfig
from gan.data.prepare import PreparedData, prepare_arrays
from gan.eval import ordering as O
from gan.eval import validation as V
from gan.eval.judge import train_judge
from gan.eval.ssl_judge import train_ssl_judge
from gan.tools.judge_tables import write_markdown

DATASETS = ("digits", "painted", "shapes")
DEFAULT_OUT = Path("out/judge_study")


@dataclass(frozen=True)
class Sizes:
    """How big the study is (full size by default; `QUICK` for a smoke run)."""

    n: int = 500  # images per disturbed set and per generator sample
    repeats: int = 5  # independent draws per strength
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # latent seeds per generator
    ladder_epochs: tuple[int, ...] = (1, 2, 3, 4, 10, 20)
    judge_epochs: int = EvalConfig().judge_epochs  # the pipeline's defaults
    ssl_epochs: int = EvalConfig().ssl_judge_epochs
    reference_epochs: int = 12
    run_images: int = 1800  # painted and shapes: a run's whole set (train + holdout)
    reference_factor: int = 10  # the reference sees this many times more images


QUICK = Sizes(n=200, repeats=3, seeds=(0, 1, 2), ladder_epochs=(1, 2, 4), judge_epochs=3,
              ssl_epochs=3, reference_epochs=3, run_images=400, reference_factor=3)


@dataclass(frozen=True)
class Case:
    """A dataset as the study uses it: the run's data and the reference's labelled images."""

    name: str
    data: PreparedData
    ref_x: torch.Tensor  # (R, C, H, W): what the reference trains on
    ref_y: torch.Tensor  # (R,)
    reference_note: str  # where its accuracy is measured


def load_case(name: str, sizes: Sizes) -> Case:
    """The run's `PreparedData` and the reference's training images for one dataset."""
    if name == "digits":
        data = prepare_arrays(DataConfig())
        return Case(name, data, torch.cat([data.x_train, data.x_holdout]),
                    torch.cat([data.y_train, data.y_holdout]),
                    "all 1,797 digits; accuracy on the run's holdout, which it has seen")
    if name == "painted":
        from gan.data.painted import render_painted

        data = V.prepared_from_arrays(*render_painted(sizes.run_images, seed=0, part="run"),
                                      name="painted")
        rx, ry = render_painted(sizes.run_images * sizes.reference_factor, seed=0,
                                part="reference")
        ref = V.prepared_from_arrays(rx, ry, name="painted-reference", holdout_fraction=0.01)
        return Case(name, data, ref.x_train, ref.y_train,
                    f"{len(ref.x_train):,} painted images of the other half of the glyphs; "
                    "accuracy on the run's holdout (glyphs it never saw)")
    if name == "shapes":
        from gan.data.shapes import CLASSES, render_shapes

        per_class = sizes.run_images // len(CLASSES)
        data = V.prepared_from_arrays(*render_shapes(per_class, seed=0), name="shapes")
        ref = V.prepared_from_arrays(*render_shapes(per_class * sizes.reference_factor, seed=1),
                                     name="shapes-reference", holdout_fraction=0.01)
        return Case(name, data, ref.x_train, ref.y_train,
                    f"{len(ref.x_train):,} shapes of another seed; accuracy on the run's holdout")
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _judges(case: Case, sizes: Sizes, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """{name: {"judge": ..., "quality": {...}, "train_s": s}} for the judges under test and
    the controls."""
    data = case.data
    clf, t_clf = _timed(lambda: train_judge(data, sizes.judge_epochs, seed=0))
    log(f"{case.name}: classifier judge accuracy {clf.accuracy:.3f} in {t_clf:.0f}s")
    ssl, t_ssl = _timed(lambda: train_ssl_judge(data, sizes.ssl_epochs, seed=0))
    log(f"{case.name}: label-free judge {ssl.quality} in {t_ssl:.0f}s")
    return {
        "classifier": {"judge": clf, "quality": {"holdout_accuracy": clf.accuracy},
                       "train_s": t_clf},
        "label-free": {"judge": ssl, "quality": dict(ssl.quality), "train_s": t_ssl},
        "colour-only (control)": {"judge": V.ColourOnlyJudge(), "quality": {}, "train_s": 0.0},
        "untrained (control)": {"judge": V.random_judge(data), "quality": {}, "train_s": 0.0},
    }


def _sweep_rows(sweeps: list[V.Sweep]) -> list[dict[str, Any]]:
    return [{"disturbance": s.disturbance, "metric": s.metric, "strengths": s.strengths,
             "means": s.means, "stds": s.stds, "z": [st.z for st in s.steps()],
             "monotone": s.monotone()} for s in sweeps]


def _scores(scores: dict[str, O.Score]) -> dict[str, dict[str, float]]:
    return {k: {"mean": s.mean, "std": s.std, "values": list(s.values)} for k, s in scores.items()}


def run_case(name: str, sizes: Sizes, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything the study measures on one dataset, as a JSON-ready dict."""
    t0 = time.perf_counter()
    case = load_case(name, sizes)
    data = case.data
    judges = _judges(case, sizes, log)
    refs = {}
    for seed in (1, 2):
        ref, t_ref = _timed(lambda seed=seed: V.reference_judge(
            case.ref_x, case.ref_y, data.x_holdout, data.y_holdout, data.num_classes,
            epochs=sizes.reference_epochs, seed=seed))
        refs[seed] = (ref, t_ref)
        log(f"{name}: reference (seed {seed}) accuracy {ref.accuracy:.3f} in {t_ref:.0f}s")
    ladder, t_ladder = _timed(lambda: O.train_ladder(data, *O.ladder_recipe(data),
                                                     sizes.ladder_epochs))
    samples = O.sample_all(ladder, n=sizes.n, seeds=sizes.seeds)
    ref_scores = {s: O.score_samples(r, data.x_holdout, samples) for s, (r, _) in refs.items()}
    out: dict[str, Any] = {
        "dataset": name, "sizes": asdict(sizes), "n_train": len(data.x_train),
        "n_holdout": len(data.x_holdout), "channels": int(data.x_train.shape[1]),
        "image_size": int(data.x_train.shape[2]), "num_classes": data.num_classes,
        "ladder_train_s": t_ladder, "ladder": list(ladder),
        "reference": {"n_train": len(case.ref_x), "note": case.reference_note,
                      "accuracy": refs[1][0].accuracy, "train_s": refs[1][1],
                      "scores": _scores(ref_scores[1]),
                      "second_seed": {"accuracy": refs[2][0].accuracy,
                                      "scores": _scores(ref_scores[2]),
                                      "agreement": asdict(O.rank_agreement(ref_scores[1],
                                                                           ref_scores[2]))}},
        "judges": {},
    }
    ref_sweeps, t_sw = _timed(lambda: V.judge_sweeps(refs[1][0], data, n=sizes.n,
                                                      repeats=sizes.repeats))
    out["reference"]["sweeps"] = _sweep_rows(ref_sweeps)
    log(f"{name}: reference sweeps {t_sw:.0f}s")
    for jname, j in judges.items():
        sweeps, t_sw = _timed(lambda j=j: V.judge_sweeps(j["judge"], data, n=sizes.n,
                                                          repeats=sizes.repeats))
        scores = O.score_samples(j["judge"], data.x_holdout, samples)
        ag = O.rank_agreement([ref_scores[1], ref_scores[2]], scores)
        log(f"{name}: {jname}: τ {ag.tau:.3f} ({ag.kept}/{ag.pairs} pairs), sweeps {t_sw:.0f}s")
        out["judges"][jname] = {"quality": j["quality"], "train_s": j["train_s"],
                                "sweeps": _sweep_rows(sweeps), "scores": _scores(scores),
                                "agreement": asdict(ag)}
    out["total_s"] = time.perf_counter() - t0
    return out


def provenance(threads: int) -> dict[str, str]:
    """Date, commit and machine of a measurement (for the docs)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True,
                               text=True, check=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    import os

    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
            "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), "
                       f"torch {torch.__version__}, {threads} thread(s)"}


def main(argv: list[str] | None = None) -> int:
    """`python -m gan.tools.judge_study`: see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m gan.tools.judge_study",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help=f"comma list of {', '.join(DATASETS)}")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--table-only", action="store_true",
                    help="rebuild judge_study.md from <out>/*.json, measure nothing")
    args = ap.parse_args(argv)
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [d for d in names if d not in DATASETS]
    if bad:
        ap.error(f"unknown --datasets {bad}; choose from {', '.join(DATASETS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        torch.set_num_threads(args.threads)
        sizes = QUICK if args.quick else Sizes()
        for name in names:
            result = run_case(name, sizes)
            result["provenance"] = provenance(args.threads) | {"quick": args.quick}
            (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    results = [json.loads((args.out / f"{d}.json").read_text()) for d in DATASETS
               if (args.out / f"{d}.json").exists()]
    path = write_markdown(args.out / "judge_study.md", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
