"""Metrics on digits with stand-in generators: real data scores about the floor, noise and a
collapsed generator score far worse and are caught; plus the metric helpers on known inputs."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from gan.core.config import DataConfig, EvalConfig, GateConfig, ModelConfig, TrainConfig
from gan.core.images import from_uint8
from gan.core.records import Report
from gan.data.prepare import PreparedData, prepare_arrays
from gan.eval import metrics as M
from gan.eval.evaluate import (
    Champion,
    compute_floors,
    evaluate_generator,
    gate,
    proportional_labels,
    render_markdown,
)
from gan.eval.judge import Judge, JudgeError, train_judge
from gan.train.checkpoint import generator_from_checkpoint, load_checkpoint, save_checkpoint
from gan.train.state import make_state

CFG = EvalConfig(judge_epochs=8, n_seeds=2)  # n = max(360 holdout, 1000) = 1000 samples


# --------------------------------------------------------------------------- stand-in generators


class TrainReplay(nn.Module):
    """A perfect sampler of the train distribution: train images in a fixed order, no repeats."""

    conditional = False

    def __init__(self, images: Tensor) -> None:
        super().__init__()
        self.latent_dim = 8
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(7))
        self.images, self.next = images[perm], 0

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        idx = torch.arange(self.next, self.next + len(z)) % len(self.images)
        self.next += len(z)
        return self.images[idx]


class PickByLatent(nn.Module):
    """Returns the train image that z's first coordinate points at (per class if conditional).

    `only_class` keeps one class: a generator collapsed onto a single mode.
    """

    def __init__(self, data: PreparedData, *, conditional: bool = False,
                 only_class: int | None = None) -> None:
        super().__init__()
        self.latent_dim, self.conditional = 8, conditional
        keep = data.y_train == only_class if only_class is not None else slice(None)
        self.images, self.labels = data.x_train[keep], data.y_train[keep]

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        u = torch.special.ndtr(z[:, 0])  # (B,) uniform in (0, 1)
        if not self.conditional:
            return self.images[(u * len(self.images)).long().clamp(max=len(self.images) - 1)]
        assert y is not None
        out = torch.empty(len(z), *self.images.shape[1:])
        for c in y.unique():
            pool, rows = self.images[self.labels == c], y == c
            out[rows] = pool[(u[rows] * len(pool)).long().clamp(max=len(pool) - 1)]
        return out


class Noise(nn.Module):
    """tanh of a fixed random projection of z: structureless images, deterministic in z."""

    conditional = False

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.latent_dim, self.shape = 64, shape
        g = torch.Generator().manual_seed(3)
        self.register_buffer("w", torch.randn(64, int(np.prod(shape)), generator=g))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.tanh(z @ self.w).view(len(z), *self.shape)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One intra-op thread for this module (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    return prepare_arrays(DataConfig())


@pytest.fixture(scope="module")
def judge(digits: PreparedData) -> Judge:
    return train_judge(digits, CFG.judge_epochs, seed=0)


@pytest.fixture(scope="module")
def floors(judge: Judge, digits: PreparedData) -> dict:
    fl = compute_floors(judge, digits, CFG)
    rounded = {k: round(v, 4) for k, v in fl["floors"].items()}
    ceilings = {k: round(v, 4) for k, v in fl["ceilings"].items()}
    print(f"\ndigits real-vs-real (train vs holdout, n={fl['n']}): {rounded}; ceilings {ceilings}")
    return fl


def run(gen: nn.Module, digits: PreparedData, judge: Judge, floors: dict,
        cfg: EvalConfig = CFG) -> tuple[dict, dict]:
    return evaluate_generator(gen, digits, judge, cfg, floors=floors)


def as_report(result: dict) -> Report:
    return Report(run_id="t", dataset_version="v", report_uri="s3://b/r.json",
                  markdown_uri="s3://b/r.md", **result)


# --------------------------------------------------------------------------- on digits


def test_real_data_scores_about_the_floor(digits, judge, floors):
    result, _ = run(TrainReplay(digits.x_train), digits, judge, floors)
    m, fl = result["metrics"], result["floors"]
    print("\nreal-vs-real candidate:", {k: round(v, 4) for k, v in m.items()})
    assert result["n_samples"] == 1000 and floors["n"] == 1000
    assert abs(m["fid"] - fl["fid"]) < 0.5 * fl["fid"] + 0.05
    assert abs(m["kid_mean"] - fl["kid_mean"]) < 2 * max(m["kid_std"], fl["kid_std"])
    for k in ("precision", "recall"):
        assert abs(m[k] - fl[k]) < 0.05, k
    for k in ("density", "coverage"):
        assert abs(m[k] - fl[k]) < 0.1, k
    assert m["inception_score"] == pytest.approx(result["ceilings"]["inception_score"], rel=0.05)
    assert result["classes_covered"] == 10 and m["class_kl"] < 0.05


def test_noise_scores_far_worse_than_the_floor(digits, judge, floors):
    result, _ = run(Noise((1, 28, 28)), digits, judge, floors)
    m, fl = result["metrics"], result["floors"]
    assert m["fid"] > 50 * fl["fid"]
    assert m["kid_mean"] > fl["kid_mean"] + 50 * max(m["kid_std"], fl["kid_std"])
    assert m["precision"] < 0.05 and m["recall"] < 0.05 and m["coverage"] < 0.05
    assert m["inception_score"] < 0.5 * result["ceilings"]["inception_score"]


def test_collapsed_generator_is_caught_and_refused_by_the_gate(digits, judge, floors):
    result, _ = run(PickByLatent(digits, only_class=3), digits, judge, floors)
    m = result["metrics"]
    assert result["classes_covered"] == 1
    assert max(result["class_hist"]) > 0.9 and result["class_hist"][3] > 0.9
    assert m["class_kl"] > 5.0  # ≈ 0.9·ln(0.1/1e-6) for the nine empty classes
    assert m["recall"] < 0.1 and m["fid"] > 50 * result["floors"]["fid"]
    decision = gate(as_report(result), None, GateConfig())
    assert not decision.promote
    # classes, KL, recall, and both copy rules (it returns training images)
    assert sum(r.startswith("FAIL") for r in decision.reasons) == 5


class OnePerClass(PickByLatent):
    """A conditional G that ignores z: one real image per class (within-class collapse)."""

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return super().forward(torch.zeros_like(z), y)


def test_within_class_collapse_keeps_classes_but_the_gate_refuses_it(digits, judge, floors):
    """Every class present in the right shares (class rules pass), yet recall is near 0."""
    result, _ = run(OnePerClass(digits, conditional=True), digits, judge, floors)
    assert result["classes_covered"] == 10 and result["metrics"]["class_kl"] < 0.05
    assert result["metrics"]["recall"] < 0.1 and result["metrics"]["precision"] > 0.5
    # the copy rule is off here: this stand-in also returns training images (its own test)
    decision = gate(as_report(result), None, GateConfig(min_copy_ct=None,
                                                        min_copy_distance_ratio=0.0))
    failed = [r for r in decision.reasons if r.startswith("FAIL")]
    assert not decision.promote and len(failed) == 1 and "recall" in failed[0], decision.reasons


def test_conditional_generator_accuracy_and_one_row_per_class(digits, judge, floors):
    result, pics = run(PickByLatent(digits, conditional=True), digits, judge, floors)
    assert result["conditional_accuracy"] > 0.95
    assert result["metrics"]["conditional_accuracy"] == result["conditional_accuracy"]
    p_real = M.class_shares(digits.y_train, 10)
    assert result["class_hist"] == pytest.approx(p_real.tolist(), abs=0.02)
    # samples.png: 10×10 tiles of 28 px, 2 px padding, drawn at scale 2; row r shows class r.
    img = np.asarray(Image.open(io.BytesIO(pics["samples"])))
    assert img.shape == (604, 604)
    small = torch.from_numpy(img[::2, ::2].copy())  # (302, 302) uint8
    tiles = torch.stack([small[2 + r * 30:30 + r * 30, 2 + c * 30:30 + c * 30]
                         for r in range(10) for c in range(10)])[:, None]  # (100, 1, 28, 28)
    rows = judge.predict(from_uint8(tiles)).view(10, 10)
    assert (rows == torch.arange(10)[:, None]).float().mean() > 0.9


def test_same_generator_gives_the_same_report_and_pictures(digits, judge, floors):
    a, pa = run(Noise((1, 28, 28)), digits, judge, floors)
    b, pb = run(Noise((1, 28, 28)), digits, judge, floors)
    assert a == b
    assert pa == pb
    assert a["seeds"] == {"eval": CFG.seed, "judge": 0}


def test_pictures_are_valid_pngs(digits, judge, floors):
    history = [{"epoch": e, "loss_d": 1.0, "loss_g": 2.0, "d_real": 0.6, "d_fake": 0.4}
               for e in (1, 2, 3)]
    _, pics = evaluate_generator(PickByLatent(digits), digits, judge, CFG, history,
                                 floors=floors)
    sizes = {k: Image.open(io.BytesIO(v)).size for k, v in pics.items()}
    assert sizes == {"samples": (604, 604), "real_vs_generated": (604 + 16 + 604, 604),
                     "curves": (1000, 400)}


def test_untrustworthy_judge_fails_the_evaluation(digits):
    small = prepare_arrays(DataConfig(limit=300))
    perm = torch.randperm(len(small.y_train), generator=torch.Generator().manual_seed(0))
    bad = train_judge(dataclasses.replace(small, y_train=small.y_train[perm]),
                      2)
    with pytest.raises(JudgeError, match="below eval.min_judge_accuracy=0.95"):
        evaluate_generator(PickByLatent(digits), digits, bad, CFG)


def test_nonfinite_samples_are_counted_and_fail_the_gate(digits, judge, floors):
    class HalfNaN(PickByLatent):
        def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
            x = super().forward(z, y).clone()
            x[z[:, 1] > 0] = float("nan")
            return x

    result, _ = run(HalfNaN(digits), digits, judge, floors)
    shares = [float((torch.randn(1000, 8, generator=torch.Generator().manual_seed(s))[:, 1] > 0)
                    .float().mean()) for s in result["eval_seeds"]]
    assert result["eval_seeds"] == [CFG.seed + i for i in range(CFG.n_seeds)]
    assert result["per_seed"]["nonfinite_fraction"] == pytest.approx(shares)
    assert result["metrics"]["nonfinite_fraction"] == pytest.approx(np.mean(shares))
    failed = [r for r in gate(as_report(result), None, GateConfig()).reasons
              if r.startswith("FAIL")]
    assert any(r.startswith("FAIL: non-finite samples 0.4") for r in failed), failed


def test_wrong_output_shape_is_a_clear_error(digits, judge, floors):
    with pytest.raises(ValueError, match=r"generator output \(1, 32, 32\) does not match"):
        run(Noise((1, 32, 32)), digits, judge, floors)


def test_untrained_model_from_a_checkpoint_is_scored_and_refused(digits, judge, floors):
    model = ModelConfig(arch="mlp", conditional=True, g_hidden=(16, 32), d_hidden=(32, 16))
    state = make_state(model, TrainConfig(ema_decay=0.0))
    generator = generator_from_checkpoint(load_checkpoint(save_checkpoint(state)))
    generator.train()
    result, pics = run(generator, digits, judge, floors)
    assert generator.training  # the caller's mode is restored
    assert 0.0 <= result["conditional_accuracy"] < 0.5  # random weights do not draw digits
    assert result["metrics"]["fid"] > 10 * result["floors"]["fid"]
    assert not gate(as_report(result), None, GateConfig()).promote
    assert set(pics) == {"samples", "real_vs_generated", "curves"}


# --------------------------------------------------------------------------- metric helpers


class Flat(nn.Module):
    """(N, F, 1, 1) → (N, F): lets the metrics run on hand-made feature vectors."""

    def __init__(self, f: int) -> None:
        super().__init__()
        self.num_features = f

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


def test_fid_matches_the_gaussian_closed_form():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(20000, 4, 1, 1, generator=g)
    fake = torch.randn(20000, 4, 1, 1, generator=g) * 2.0
    fake[:, 0] += 1.0
    # N(0, I) vs N(e0, 4I): ‖μ‖² + tr(I + 4I − 2·(4I)^½) = 1 + 4·(1 + 4 − 4) = 5
    assert M.fid(Flat(4), real, fake) == pytest.approx(5.0, abs=0.15)


def test_kid_is_seeded_and_near_zero_for_one_distribution():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(600, 8, 1, 1, generator=g), torch.randn(600, 8, 1, 1, generator=g)
    k1, k2 = M.kid(Flat(8), a, b, seed=1), M.kid(Flat(8), a, b, seed=1)
    assert k1 == k2
    assert abs(k1[0]) < 3 * k1[1] + 1e-3
    assert M.kid(Flat(8), a, b + 1.0, seed=1)[0] > 0.5


def test_inception_score_bounds():
    confident = 30.0 * torch.eye(10)[torch.arange(1000) % 10]  # (1000, 10) logits
    one_class = 30.0 * torch.eye(10)[torch.zeros(1000, dtype=torch.long)]
    assert M.inception_score(Flat(10), confident[:, :, None, None], seed=0)[0] > 9.5
    assert M.inception_score(Flat(10), one_class[:, :, None, None], seed=0)[0] == pytest.approx(
        1.0, abs=1e-3)


def test_prdc_on_identical_and_disjoint_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5)).astype(np.float32)
    same = M.prdc_metrics(a, a)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = M.prdc_metrics(a, a + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    with pytest.raises(ValueError, match="prdc needs"):
        M.prdc_metrics(a[:5], a)


@pytest.mark.parametrize(("n_real", "n_fake", "shift", "block"),
                         [(120, 90, 0.0, 1024), (150, 130, 0.7, 32), (64, 200, 3.0, 7)])
def test_blocked_prdc_equals_the_prdc_package(n_real, n_fake, shift, block):
    """The hand-written blocked PRDC gives the `prdc` package's numbers, for both k, with
    tiles smaller than the sets (so the accumulation across tiles is exercised)."""
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(n_real)
    real = rng.normal(size=(n_real, 6)).astype(np.float32)
    fake = (rng.normal(size=(n_fake, 6)) * 1.3 + shift).astype(np.float32)
    ours = M.prdc_metrics(real, fake, block=block)
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        pr = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=M.PR_K)
        dc = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=M.DC_K)
    expected = {"precision": pr["precision"], "recall": pr["recall"],
                "density": dc["density"], "coverage": dc["coverage"]}
    assert ours == pytest.approx(expected, abs=1e-9), (ours, expected)


def test_smallest_distances_are_blocked_exactly():
    rng = np.random.default_rng(1)
    x, ref = rng.normal(size=(50, 3)), rng.normal(size=(70, 3))
    full = np.sort(np.linalg.norm(x[:, None] - ref[None], axis=2), axis=1)[:, :4]
    assert M.smallest_distances(x, ref, 4, block=8).numpy() == pytest.approx(full, abs=1e-9)


def test_copy_stats_tell_copies_from_fresh_samples():
    rng = np.random.default_rng(2)
    train, holdout = rng.normal(size=(400, 8)), rng.normal(size=(100, 8))
    fresh = rng.normal(size=(300, 8))
    copies = train[rng.integers(0, 400, size=300)]
    f, c = M.copy_stats(train, holdout, fresh), M.copy_stats(train, holdout, copies)
    assert 0.0 < f["copy_fraction"] < 0.25 and 0.8 < f["copy_distance_ratio"] < 1.25
    assert c["copy_fraction"] == 1.0 and c["copy_distance_ratio"] == 0.0
    assert -3 < f["copy_ct"] < 3 and c["copy_ct"] < -10


def test_class_kl_and_coverage():
    p = torch.full((10,), 0.1, dtype=torch.float64)
    assert M.class_kl(p, p) == pytest.approx(0.0, abs=1e-12)
    q = torch.tensor([0.2, 0.0] + [0.1] * 8, dtype=torch.float64)
    kl = M.class_kl(p, q)
    assert 1.0 < kl < 1.2 and np.isfinite(kl)  # 0.1·ln(0.1/1e-6) + 0.1·ln(0.5) ≈ 1.08
    stats = M.class_stats(torch.tensor([0] * 97 + [1] * 3), p, threshold=0.02)
    assert stats["classes_covered"] == 2 and stats["class_hist"][:2] == [0.97, 0.03]
    assert M.class_stats(torch.tensor([0] * 98 + [1] * 2), p, 0.02)["classes_covered"] == 1


def test_proportional_labels():
    p = torch.tensor([0.5, 0.3, 0.2])
    y = proportional_labels(p, 11, seed=0)
    assert torch.bincount(y).tolist() == [6, 3, 2]  # 5.5, 3.3, 2.2 → largest remainder
    assert torch.equal(y, proportional_labels(p, 11, seed=0))
    assert not torch.equal(torch.sort(y).values, y) or len(set(y.tolist())) == 1


# --------------------------------------------------------------------------- champion, copying


class PickHoldout(nn.Module):
    """A generator that never saw the training set: the holdout image that z's coordinate
    `axis` points at. Two axes = two equally good samplers whose scores differ by noise only."""

    conditional = False

    def __init__(self, data: PreparedData, axis: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.axis, self.images = 8, axis, data.x_holdout.float()

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        u = torch.special.ndtr(z[:, self.axis])  # (B,) uniform in (0, 1)
        return self.images[(u * len(self.images)).long().clamp(max=len(self.images) - 1)]


@pytest.fixture(scope="module")
def fresh_vs_copy(digits, judge, floors):
    """(fresh, copying) results: the fresh one re-scores the copying one as its champion."""
    copying, _ = run(PickByLatent(digits), digits, judge, floors)
    fresh, _ = evaluate_generator(PickHoldout(digits), digits, judge, CFG, floors=floors,
                                  champion=Champion("1", PickByLatent(digits)))
    for name, r in (("fresh (holdout images)", fresh), ("copying (train images)", copying)):
        m = r["metrics"]
        print(f"\n{name}: copy_fraction {m['copy_fraction']:.3f}, distance ratio "
              f"{m['copy_distance_ratio']:.3f}, FID {m['fid']:.3f} ± {r['spread']['fid']:.3f}")
    return fresh, copying


def test_copying_generator_fails_the_copy_rule_and_a_fresh_one_passes(fresh_vs_copy):
    fresh, copying = fresh_vs_copy
    assert copying["metrics"]["copy_fraction"] == 1.0
    assert copying["metrics"]["copy_distance_ratio"] == 0.0
    assert fresh["metrics"]["copy_fraction"] < 0.25
    assert 0.7 < fresh["metrics"]["copy_distance_ratio"] < 1.4
    bad = gate(as_report(copying), None, GateConfig())
    assert not bad.promote
    assert any("reproduces training images" in r for r in bad.reasons if r.startswith("FAIL"))
    good = gate(as_report(fresh), None, GateConfig())
    assert any(r.startswith("PASS: copy test C_T") for r in good.reasons), good.reasons


def test_champion_is_rescored_on_the_same_seeds(fresh_vs_copy, digits, judge, floors):
    fresh, copying = fresh_vs_copy
    score = fresh["champion"]
    assert score.version == "1" and score.comparable
    # the champion's numbers are exactly what scoring it alone on the same seeds gives
    assert score.per_seed["fid"] == copying["per_seed"]["fid"]
    assert score.metrics["fid"] == copying["metrics"]["fid"]
    report = as_report(fresh)
    md = render_markdown(report)
    assert "champion v1 (re-scored)" in md and " ± " in md


def test_same_generator_as_champion_does_not_promote(digits, judge, floors):
    gen = PickHoldout(digits)
    result, _ = evaluate_generator(gen, digits, judge, CFG, floors=floors,
                                   champion=Champion("4", PickHoldout(digits)))
    assert result["per_seed"]["fid"] == result["champion"].per_seed["fid"]
    d = gate(as_report(result), None, GateConfig(), champion_version="4")
    assert not d.promote and "a tie or a noise-level difference" in d.reasons[-1]


def test_equally_good_generators_do_not_promote_each_other(digits, judge, floors):
    """Two samplers of the same holdout images, driven by different latent coordinates: any
    FID difference between them is evaluation noise, so neither replaces the other."""
    a, b = PickHoldout(digits, axis=0), PickHoldout(digits, axis=1)
    ab, _ = evaluate_generator(a, digits, judge, CFG, floors=floors, champion=Champion("1", b))
    report = as_report(ab)
    assert report.per_seed["fid"] != report.champion.per_seed["fid"]  # they do differ
    assert not gate(report, None, GateConfig(), champion_version="1").promote
    swapped = report.model_copy(update={
        "metrics": report.champion.metrics, "per_seed": report.champion.per_seed,
        "champion": report.champion.model_copy(update={
            "metrics": report.metrics, "per_seed": report.per_seed})})
    assert not gate(swapped, None, GateConfig(), champion_version="1").promote


def test_champion_of_another_image_size_is_reported_and_blocks_promotion(digits, judge, floors):
    other = Noise((1, 32, 32))
    other.image_shape = (1, 32, 32)
    result, _ = evaluate_generator(PickHoldout(digits), digits, judge, CFG, floors=floors,
                                   champion=Champion("2", other))
    score = result["champion"]
    assert not score.comparable and score.metrics == {}
    assert score.reason == "it draws (1, 32, 32) images (C, H, W), the data has (1, 28, 28)"
    d = gate(as_report(result), None, GateConfig(), champion_version="2")
    assert not d.promote and "cannot be scored on this data" in d.reasons[-1]
    assert "could not be re-scored" in render_markdown(as_report(result))
