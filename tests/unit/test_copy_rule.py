"""The copy rule: Meehan, Chaudhuri & Dasgupta's (AISTATS 2020) data-copying test C_T and the
distance ratio, on the grey digits in a classifier judge's feature space.

What it pins: C_T is computed as the authors' code computes it (k-means cells on the training
features, per cell the Z-scored Mann–Whitney U of generated-to-train against holdout-to-train
nearest distances within the cell, cells weighted by their share of the holdout, cells with 20
generated samples or fewer left out); it falls as more of the samples are verbatim training
images; the gate fails 25 % and 50 % planted copies and passes fresh samples; a holdout
holding duplicates of training images does not hide a generator that returns training images
plus 1 % noise (the old copy fraction scored it 0.000).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.neighbors import NearestNeighbors

from gan.core.config import DataConfig, EvalConfig
from gan.data.prepare import PreparedData, prepare_arrays
from gan.eval import metrics as M
from gan.eval.evaluate import compute_floors, evaluate_generator
from gan.eval.judge import Judge, train_judge
from gan.tools.copy_study import PlantedCopies, copy_lines

CFG = EvalConfig(judge_epochs=8, n_seeds=2)  # n = max(holdout, 1000) = 1000 samples a seed


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
def scored(digits: PreparedData, judge: Judge) -> dict[float, dict]:
    """Planted fraction → evaluation result, on the default holdout (≈ 360 images): a share
    of verbatim training images, the rest fresh holdout images (`PlantedCopies`)."""
    floors = compute_floors(judge, digits, CFG)
    out = {}
    for fraction in (0.0, 0.1, 0.25, 0.5, 1.0):
        out[fraction], _ = evaluate_generator(PlantedCopies(digits, fraction), digits, judge,
                                              CFG, floors=floors)
        m = out[fraction]["metrics"]
        print(f"\nplanted {fraction:.0%}: C_T {m.get('copy_ct', float('nan')):.2f}, distance "
              f"ratio {m['copy_distance_ratio']:.3f}, copy fraction {m['copy_fraction']:.3f}")
    return out


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_planted_copies_fail_the_copy_rule(scored: dict, fraction: float) -> None:
    """With max_copy_fraction 0.5 and fresh samples at ≈ 0.1, 25 % verbatim training images
    passed: 'PASS: copy fraction 0.315 (...; distance ratio 0.862) within the maximum 0.5'."""
    lines = copy_lines(scored[fraction])
    assert any(r.startswith("FAIL") and "C_T" in r for r in lines), lines
    for r in lines:  # each copy line gives both figures
        assert "C_T" in r and "distance ratio" in r, r


def test_fresh_samples_pass_the_copy_rule(scored: dict) -> None:
    lines = copy_lines(scored[0.0])
    assert lines and all(r.startswith("PASS") for r in lines), lines
    assert scored[0.0]["metrics"]["copy_ct"] > -2


def test_c_t_falls_as_more_samples_are_copies(scored: dict) -> None:
    """An instrument first: more copying scores worse, monotonically."""
    ct = [scored[f]["metrics"]["copy_ct"] for f in (0.0, 0.1, 0.25, 0.5, 1.0)]
    assert all(a > b for a, b in zip(ct, ct[1:], strict=False)), ct
    ratio = [scored[f]["metrics"]["copy_distance_ratio"] for f in (0.0, 0.25, 0.5, 1.0)]
    assert all(a > b for a, b in zip(ratio, ratio[1:], strict=False)), ratio
    assert ratio[-1] == 0.0


# --------------------------------------------------------------------------- the statistic


def _authors_c_t(train: np.ndarray, holdout: np.ndarray, fake: np.ndarray,
                 t_cells: np.ndarray, h_cells: np.ndarray, f_cells: np.ndarray) -> float:
    """C_T as github.com/casey-meehan/data-copying computes it (data_copying_tests.py:
    `Zu`, `Zu_cells`, `C_T` with tau = 20 / m), written out here with sklearn and scipy."""
    m, n, k = len(fake), len(holdout), int(t_cells.max()) + 1
    weights, scores = [], []
    for c in range(k):
        q, p, t = fake[f_cells == c], holdout[h_cells == c], train[t_cells == c]
        if len(q) <= 20 or len(p) == 0:  # Q_m(π) > τ = 20/m; P_n(π) = 0 weighs nothing
            continue
        nn_t = NearestNeighbors(n_neighbors=1).fit(t)
        lq, lp = nn_t.kneighbors(q)[0][:, 0], nn_t.kneighbors(p)[0][:, 0]
        u = mannwhitneyu(lq, lp, alternative="less").statistic
        mq, np_ = len(q), len(p)
        scores.append((u - (mq * np_ / 2 - 0.5)) / np.sqrt(mq * np_ * (mq + np_ + 1) / 12))
        weights.append(np_ / n)
    del m
    return float(np.dot(weights, scores) / np.sum(weights))


def test_c_t_is_the_authors_statistic() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(600, 5))
    holdout = rng.normal(size=(200, 5))
    fake = np.concatenate([rng.normal(size=(300, 5)), train[:100] + 0.01])
    cells = M.copy_cells(train, len(holdout), seed=0)
    stats = M.copy_stats(train, holdout, fake, cells=cells)
    ours = stats["copy_ct"]
    ref = _authors_c_t(train, holdout, fake, cells.cell_of(train), cells.cell_of(holdout),
                       cells.cell_of(fake))
    assert ours == pytest.approx(ref, abs=1e-9)
    assert stats["copy_cells"] == cells.k == 2  # 200 holdout points: 100 a cell


def test_holdout_duplicates_do_not_hide_copies_plus_noise() -> None:
    """14 % of the holdout are duplicates of training images (distance 0): the old copy
    fraction's threshold (the holdout's 10 % quantile) was 0, so training images + 1 % noise
    scored 0.000 and passed. C_T compares whole distributions and still sees them."""
    rng = np.random.default_rng(1)
    train = rng.normal(size=(1000, 8))
    holdout = rng.normal(size=(300, 8))
    holdout[:42] = train[rng.choice(1000, 42, replace=False)]  # 14 %
    fake = train[rng.integers(0, 1000, 1000)] * (1 + 0.01 * rng.normal(size=(1000, 8)))
    stats = M.copy_stats(train, holdout, fake)
    assert stats["copy_fraction"] == 0.0  # the blind spot of the old rule
    assert stats["copy_ct"] < -3 and stats["copy_distance_ratio"] < 0.1
