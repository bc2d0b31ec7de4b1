"""Tables of recipe results: the side-by-side table per run and the mean ± std over seeds.

What this module is: `load_rows` reads every `<out>/*/result.json` that `gan.tools.recipes`
wrote; `results_table` puts them side by side (one line per candidate and seed, the real-data
floor first); `aggregate` groups them by recipe name and gives, per metric, the mean, the sample
standard deviation (n-1), min, max and n over the training seeds; `seeds_table` renders that;
`write_tables` writes `results.{json,md}` (and `aggregate.json` once a recipe has several seeds).

What it is not: no training or evaluation (`gan.tools.recipes`), no metric math
(`gan.eval.evaluate`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gan.core.tables import markdown_table


def load_rows(out_dir: Path, judge_sha: str | None = None) -> list[dict[str, Any]]:
    """Every `<out_dir>/*/result.json` (made with `judge_sha` when given), best FID first."""
    rows = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/result.json"))]
    if judge_sha is not None:
        rows = [r for r in rows if r.get("judge_sha256") == judge_sha]
    return sorted(rows, key=lambda r: r["metrics"]["fid"])


def fmt(x: float | None, nd: int = 3) -> str:
    """`x` with `nd` decimals, or an em dash for a missing value."""
    return "—" if x is None else f"{x:.{nd}f}"


def results_table(rows: Sequence[dict[str, Any]]) -> str:
    """Side-by-side table; the first line under the header is the real-data floor/ceiling."""
    head = ["recipe", "cond", "epochs", "train s", "img/s", "FID (÷floor)", "ref FID (÷floor)",
            "KID ×1e3", "P", "R", "D", "C", "classes", "class KL", "IS", "cond acc"]
    body: list[list[object]] = []
    if rows:
        f, c = rows[0]["floors"], rows[0]["ceilings"]
        ref0 = rows[0].get("reference") or {}
        body.append(["*real data (floor/ceiling)*", "", "", "", "", fmt(f["fid"]),
                      fmt(ref0.get("floor")),
                      f"{1e3 * f['kid_mean']:.2f} ± {1e3 * f['kid_std']:.2f}",
                      fmt(f["precision"]), fmt(f["recall"]), fmt(f["density"]), fmt(f["coverage"]),
                      fmt(f.get("classes_covered"), 0), fmt(f.get("class_kl"), 4),
                      fmt(c.get("inception_score")), ""])
    for r in rows:
        m, f = r["metrics"], r["floors"]
        ratio = m["fid"] / f["fid"] if f["fid"] > 0 else math.inf
        cond = "yes" if r["model_config"].get("conditional") else "no"
        name = r["name"] + (" (diverged)" if r.get("diverged") else "")
        body.append([name, cond, r["epochs"], f"{r['train_s']:.0f}", f"{r['images_per_s']:.0f}",
                      f"{m['fid']:.3f} ({ratio:.1f}×)", _ref(r.get("reference")),
                      f"{1e3 * m['kid_mean']:.2f} ± {1e3 * m['kid_std']:.2f}",
                      fmt(m["precision"]), fmt(m["recall"]), fmt(m["density"]), fmt(m["coverage"]),
                      _classes(r), fmt(m.get("class_kl"), 4),
                      fmt(m.get("inception_score")), fmt(r.get("conditional_accuracy"))])
    if any(r.get("nyquist") for r in rows):  # the checkerboard measure (gan.eval.spectrum)
        head += ["Nyquist (real)"]
        body = [b + ([""] if i == 0 else [_nyq(rows[i - 1].get("nyquist"))])
                for i, b in enumerate(body)]
    if any("modes_covered" in r for r in rows):  # stacked digits: the mode benchmark
        head += ["modes", "modes KL"]
        body = [b + (["", ""] if i == 0 else [rows[i - 1].get("modes_covered", "—"),
                                               fmt(rows[i - 1].get("modes_kl"), 3)])
                for i, b in enumerate(body)]
    return markdown_table(head, body) + "\n"


def _classes(row: dict[str, Any]) -> object:
    """Classes covered, or an em dash under a judge without classes (the label-free one)."""
    return "—" if row["metrics"].get("class_kl") is None else row.get("classes_covered")


def _nyq(nyq: dict[str, float] | None) -> str:
    """Samples' Nyquist ratio (the real holdout's), or an em dash."""
    return "—" if not nyq else f"{nyq['samples']:.2f} ({nyq['real']:.2f})"


def _ref(ref: dict[str, Any] | None) -> str:
    """The reference classifier's FID (÷ its floor), or an em dash without one."""
    if not ref:
        return "—"
    acc = "" if ref.get("cond_acc") is None else f", cond acc {ref['cond_acc']:.2f}"
    return f"{ref['fid']:.3f} ({ref['ratio']:.1f}×{acc})"


# --------------------------------------------------------------------------- over seeds

# (column, how to read it from a row); None where a row has no such value (e.g. no classes).
SEED_METRICS: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "fid": lambda r: r["metrics"]["fid"],
    "fid_ratio": lambda r: (r["metrics"]["fid"] / r["floors"]["fid"]
                            if r["floors"]["fid"] > 0 else math.inf),
    "ref_ratio": lambda r: (r.get("reference") or {}).get("ratio"),
    "kid_x1e3": lambda r: 1e3 * r["metrics"]["kid_mean"],
    "precision": lambda r: r["metrics"]["precision"],
    "recall": lambda r: r["metrics"]["recall"],
    "density": lambda r: r["metrics"]["density"],
    "coverage": lambda r: r["metrics"]["coverage"],
    "classes_covered": lambda r: None if r["metrics"].get("class_kl") is None
    else r.get("classes_covered"),
    "class_kl": lambda r: r["metrics"].get("class_kl"),
    "conditional_accuracy": lambda r: r.get("conditional_accuracy"),
    "train_s": lambda r: r["train_s"],
    "modes_covered": lambda r: r.get("modes_covered"),  # stacked digits only
    "modes_kl": lambda r: r.get("modes_kl"),
}


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    """mean, sample std (n-1; 0 for one value), min, max and n of `values`."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe name (in first-seen order): its seeds, epochs and, per `SEED_METRICS` column,
    `_stats` over the seeds (None where no row has the value). ValueError when one name's rows
    differ in epochs or repeat a seed: those are not one recipe measured several times."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["name"], []).append(r)
    out = []
    for name, rs in groups.items():
        seeds = [r.get("seed", 0) for r in rs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"recipe {name!r}: seed repeated in {seeds}")
        epochs = sorted({r["epochs"] for r in rs})
        if len(epochs) != 1:
            raise ValueError(f"recipe {name!r}: seeds trained for different epochs {epochs}")
        stats: dict[str, Any] = {}
        for key, get in SEED_METRICS.items():
            vals = [v for v in (get(r) for r in rs) if v is not None]
            stats[key] = _stats([float(v) for v in vals]) if vals else None
        out.append({"name": name, "seeds": sorted(seeds), "epochs": epochs[0],
                    "conditional": bool(rs[0]["model_config"].get("conditional")),
                    "diverged": sum(bool(r.get("diverged")) for r in rs), "stats": stats})
    return out


def _ms(st: dict[str, float] | None, nd: int = 3, scale: float = 1.0) -> str:
    return "—" if st is None else f"{scale * st['mean']:.{nd}f} ± {scale * st['std']:.{nd}f}"


def seeds_table(agg: Sequence[dict[str, Any]], floors: dict[str, Any] | None = None) -> str:
    """Mean ± sample std (n-1) over seeds per recipe, best mean FID first; the first line
    under the header is the real-data floor when `floors` is given."""
    head = ["recipe", "cond", "seeds", "epochs", "FID", "FID ÷ floor", "FID min–max",
            "ref FID ÷ floor", "KID ×1e3", "P", "R", "D", "C", "classes", "class KL", "cond acc"]
    body: list[list[object]] = []
    if floors:
        body.append(["*real data (floor)*", "", "", "", fmt(floors["fid"]), "1.0", "", "1.0",
                      f"{1e3 * floors['kid_mean']:.2f}", fmt(floors["precision"]),
                      fmt(floors["recall"]), fmt(floors["density"]), fmt(floors["coverage"]),
                      fmt(floors.get("classes_covered"), 0), fmt(floors.get("class_kl"), 4), ""])
    for a in sorted(agg, key=lambda a: a["stats"]["fid"]["mean"]):
        st = a["stats"]
        name = a["name"] + (f" ({a['diverged']} diverged)" if a["diverged"] else "")
        body.append([name, "yes" if a["conditional"] else "no",
                      ",".join(map(str, a["seeds"])), a["epochs"], _ms(st["fid"]),
                      _ms(st["fid_ratio"], 1), f"{st['fid']['min']:.3f}–{st['fid']['max']:.3f}",
                      _ms(st["ref_ratio"], 1),
                      _ms(st["kid_x1e3"], 2), _ms(st["precision"], 2), _ms(st["recall"], 2),
                      _ms(st["density"], 2), _ms(st["coverage"], 2),
                      _ms(st["classes_covered"], 1), _ms(st["class_kl"], 4),
                      _ms(st["conditional_accuracy"], 2)])
    if any(a["stats"]["modes_covered"] is not None for a in agg):
        head += ["modes", "modes KL"]
        ranked = sorted(agg, key=lambda a: a["stats"]["fid"]["mean"])
        body = [b + ["", ""] for b in body[:len(body) - len(ranked)]] + [
            b + [_ms(a["stats"]["modes_covered"], 1), _ms(a["stats"]["modes_kl"], 3)]
            for b, a in zip(body[len(body) - len(ranked):], ranked, strict=True)]
    return markdown_table(head, body) + "\n"


def write_tables(out_dir: Path, judge_sha: str | None = None) -> str:
    """Write `results.json` (rows without per-epoch history), `results.md` and, when a recipe
    has several seeds, `aggregate.json` and the mean ± std table in `results.md`; return the
    md."""
    rows = load_rows(out_dir, judge_sha)
    slim = [{k: v for k, v in r.items() if k != "history"} for r in rows]
    (out_dir / "results.json").write_text(json.dumps(slim, indent=1))
    md = results_table(rows)
    agg = aggregate(rows)
    if any(len(a["seeds"]) > 1 for a in agg):
        (out_dir / "aggregate.json").write_text(json.dumps(agg, indent=1))
        md = ("Mean ± sample standard deviation (n-1) over the training seeds:\n\n"
              + seeds_table(agg, rows[0]["floors"]) + "\nPer seed:\n\n" + md)
    pics = "\n".join(f"- {r['name']} seed {r.get('seed', 0)}: {r['pictures']['samples']}, "
                     f"{r['pictures']['real_vs_generated']}" for r in rows)
    (out_dir / "results.md").write_text(md + "\n" + "Sample grids:\n" + pics + "\n")
    return md
