"""Markdown tables of the judge study (`gan.tools.judge_study`'s JSON results).

What this module is: `write_markdown(path, results)`: the judge-quality table, one
disturbance table per dataset (metric mean ± std per strength per judge, and each judge's
smallest step z), the checkpoint-ordering table per dataset (FID per generator, references
and judges) and the rank-correlation summary; every section says where and when it was
measured.

What it is not: no measuring (`gan.tools.judge_study`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gan.core.tables import fmt_number, markdown_table
from gan.eval.validation import STEP_Z

Result = dict[str, Any]


def _pm(mean: float, std: float) -> str:
    return f"{fmt_number(mean)} ± {fmt_number(std)}"


def _quality(q: dict[str, float]) -> str:
    keys = ("holdout_accuracy", "knn_accuracy", "retrieval_accuracy",
            "untrained_retrieval_accuracy")
    return ", ".join(f"{k} {q[k]:.3f}" for k in keys if k in q) or "—"


def judges_table(results: Sequence[Result]) -> str:
    rows = []
    for r in results:
        ref = r["reference"]
        rows.append([r["dataset"], "reference (classifier)", f"{ref['n_train']:,}",
                     f"holdout_accuracy {ref['accuracy']:.3f} (2nd seed "
                     f"{ref['second_seed']['accuracy']:.3f})", f"{ref['train_s']:.0f}"])
        for name, j in r["judges"].items():
            rows.append([r["dataset"], name, f"{r['n_train']:,}", _quality(j["quality"]),
                         f"{j['train_s']:.0f}"])
    return markdown_table(["dataset", "judge", "trained on", "quality", "train s"], rows)


def _verdict(sweep: dict[str, Any]) -> str:
    z = [float(v) for v in sweep["z"]]
    if not z:
        return "—"
    low = min(z)
    mark = "✓" if all(v > STEP_Z for v in z) else "✗"
    return f"{mark} min z {low:.1f}" if math.isfinite(low) else f"{mark} min z {low}"


def disturbance_table(result: Result) -> str:
    """Rows: (disturbance, strength) and a verdict row per disturbance; columns: judges."""
    sweeps = {"reference": result["reference"]["sweeps"],
              **{n: j["sweeps"] for n, j in result["judges"].items()}}
    names = list(sweeps)
    by_judge = {n: {(s["disturbance"], s["metric"]): s for s in sweeps[n]} for n in names}
    keys = [(s["disturbance"], s["metric"]) for s in sweeps[names[0]]]
    rows: list[list[object]] = []
    for key in keys:
        first = by_judge[names[0]][key]
        for i, strength in enumerate(first["strengths"]):
            rows.append([f"{key[0]} ({key[1]})" if i == 0 else "", fmt_number(strength),
                         *(_pm(by_judge[n][key]["means"][i], by_judge[n][key]["stds"][i])
                           for n in names)])
        rows.append(["", "*each step beyond noise?*",
                     *(f"*{_verdict(by_judge[n][key])}*" for n in names)])
    return markdown_table(["disturbance (metric)", "strength", *names], rows)


def ordering_table(result: Result) -> str:
    """Rows: generators (reference order); columns: both references and every judge."""
    ref, ref2 = result["reference"]["scores"], result["reference"]["second_seed"]["scores"]
    names = list(result["judges"])
    gens = sorted(ref, key=lambda g: ref[g]["mean"])
    rows: list[list[object]] = []
    for g in gens:
        rows.append([g, _pm(ref[g]["mean"], ref[g]["std"]), _pm(ref2[g]["mean"], ref2[g]["std"]),
                     *(_pm(result["judges"][n]["scores"][g]["mean"],
                           result["judges"][n]["scores"][g]["std"]) for n in names)])
    ag2 = result["reference"]["second_seed"]["agreement"]
    rows.append(["*Kendall τ vs reference (pairs kept)*", "—",
                 f"{ag2['tau']:.3f} ({ag2['kept']}/{ag2['pairs']})",
                 *(f"{result['judges'][n]['agreement']['tau']:.3f} "
                   f"({result['judges'][n]['agreement']['kept']}/"
                   f"{result['judges'][n]['agreement']['pairs']})" for n in names)])
    return markdown_table(["generator", "reference", "reference, 2nd seed", *names], rows)


def tau_table(results: Sequence[Result]) -> str:
    """Judges × datasets: τ over the pairs the reference separates, and τ-b over all."""
    names: list[str] = []
    for r in results:
        names += [n for n in r["judges"] if n not in names]
    rows = []
    for n in ["reference, 2nd seed", *names]:
        cells = []
        for r in results:
            ag = (r["reference"]["second_seed"]["agreement"] if n == "reference, 2nd seed"
                  else r["judges"].get(n, {}).get("agreement"))
            cells.append("—" if ag is None else f"τ {ag['tau']:.3f} ({ag['kept']}/"
                         f"{ag['pairs']}), τ-b {ag['tau_b_all']:.3f}")
        rows.append([n, *cells])
    return markdown_table(["judge", *(r["dataset"] for r in results)], rows)


def _where(r: Result) -> str:
    p = r.get("provenance", {})
    quick = " — QUICK sizes, not the full study" if p.get("quick") else ""
    return (f"Measured {p.get('date', '?')}, commit {p.get('commit', '?')}, "
            f"{p.get('machine', '?')}; {r['total_s'] / 60:.0f} min in all{quick}.")


def render(results: Sequence[Result]) -> str:
    parts = ["# Judge study", "", "Generated by `python -m gan.tools.judge_study`. "
             f"A step passes when its rise exceeds {STEP_Z:g}× its noise "
             "(z = rise / √(std_a² + std_b²), std over independent draws). A judge's τ counts "
             "the pairs of generators both references (two training seeds) separate the same "
             "way by more than twice their sampling noise; the 2nd reference's τ is against "
             "the first alone.", "",
             "## Judges", "", judges_table(results), "", "## Rank correlations", "",
             tau_table(results), ""]
    for r in results:
        s = r["sizes"]
        parts += [f"## {r['dataset']}", "", _where(r), "",
                  f"{r['n_train']:,} train / {r['n_holdout']:,} holdout images, "
                  f"{r['channels']}×{r['image_size']}×{r['image_size']}, {r['num_classes']} "
                  f"classes; n = {s['n']} images per set, {s['repeats']} draws per strength, "
                  f"{len(s['seeds'])} latent seeds per generator. Reference: "
                  f"{r['reference']['note']}.", "",
                  "### Disturbances", "", disturbance_table(r), "",
                  "### Checkpoint ordering (FID)", "",
                  f"One run of `gan.eval.ordering.ladder_recipe` snapshotted after epochs "
                  f"{', '.join(map(str, s['ladder_epochs']))} "
                  f"({r['ladder_train_s']:.0f} s), its last generator blurred, collapsed and "
                  "swirled.",
                  "", ordering_table(r), ""]
    return "\n".join(parts)


def write_markdown(path: Path, results: Sequence[Result]) -> Path:
    path.write_text(render(results) + "\n")
    return path
