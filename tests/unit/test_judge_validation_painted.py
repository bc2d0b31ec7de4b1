"""Judges validated on the painted colour digits (`gan.data.painted`; issue 22, item 3), at
small sizes.

The run sees 800 painted images (640 train, 160 holdout); the reference classifier is trained
on ten times more images painted from the *other* half of the glyphs, so its accuracy is
measured on the run's holdout, glyphs it never saw. At this size neither judge reads the
painted digits, and both are refused by their own checks (the classifier judge by its
accuracy, the label-free judge by its 5-NN rule), so the ladder ends such a run before training;
copies still move the copy statistic. The reference separates a ladder of generators (a run's
checkpoints, a blurred, a collapsed and a swirled one) and controls with colour-only or
untrained features misorder it, so the ordering check can fail. What the label-free judge
orders at 1,800 images (τ 0.76, below the 0.8 asked for) is the open gap in docs/judge.md.

Full-size figures: `python -m gan.tools.judge_study`, docs/judge.md.
"""

from __future__ import annotations

import pytest
import torch

from gan.core.config import EvalConfig
from gan.data.painted import render_painted
from gan.data.prepare import PreparedData
from gan.eval import ordering as O
from gan.eval import validation as V
from gan.eval.judge import Judge, JudgeError, check_judge, train_judge
from gan.eval.ssl_judge import SSLJudge, check_ssl_judge, train_ssl_judge

RUN_IMAGES = 800
REFERENCE_IMAGES = 10 * RUN_IMAGES
N = 200  # images per disturbed set (of 640 train images)
REPEATS = 4
Z_MIN = V.STEP_Z
TAU_MIN = 0.8
LADDER_EPOCHS = (1, 2, 4, 10, 20)  # + blurred, collapsed, swirled = 8 generators
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One intra-op thread for this module (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def painted() -> PreparedData:
    return V.prepared_from_arrays(*render_painted(RUN_IMAGES, seed=0, part="run"),
                                  name="painted")


@pytest.fixture(scope="module")
def label_free(painted: PreparedData) -> SSLJudge:
    return train_ssl_judge(painted, EvalConfig().ssl_judge_epochs, seed=0)


@pytest.fixture(scope="module")
def reference(painted: PreparedData) -> Judge:
    x, y = render_painted(REFERENCE_IMAGES, seed=0, part="reference")
    ref = V.prepared_from_arrays(x, y, name="painted-reference", holdout_fraction=0.01)
    return V.reference_judge(ref.x_train, ref.y_train, painted.x_holdout, painted.y_holdout,
                             painted.num_classes, epochs=5, seed=1)


@pytest.fixture(scope="module")
def sweeps(painted, label_free) -> list[V.Sweep]:
    return V.judge_sweeps(label_free, painted, n=N, repeats=REPEATS)


@pytest.fixture(scope="module")
def samples(painted: PreparedData) -> dict[str, list[torch.Tensor]]:
    ladder = O.train_ladder(painted, *O.ladder_recipe(painted), LADDER_EPOCHS)
    return O.sample_all(ladder, n=N, seeds=SEEDS)


@pytest.fixture(scope="module")
def reference_scores(reference, painted, samples) -> dict[str, O.Score]:
    return O.score_samples(reference, painted.x_holdout, samples)


def test_label_free_judge_cannot_read_painted_digits_at_run_size_and_is_refused(label_free):
    """At 800 images the label-free judge does not learn the glyphs either (5-NN accuracy
    0.16, chance 0.11: its metric space misses swirl and half the classes dropped, and orders
    the checkpoints at τ 0.62): its own check refuses it, so the ladder ends such a run before
    training rather than judge it. At 1,800 images it passes (5-NN 0.36), orders the same
    ladder at τ 0.76 — below the 0.8 asked for (docs/judge.md: the open gap)."""
    q = label_free.quality
    assert q["knn_accuracy"] < q["knn_chance"] + 0.1 * (1 - q["knn_chance"])
    with pytest.raises(JudgeError, match="5-NN holdout accuracy"):
        check_ssl_judge(label_free, EvalConfig())


def test_copies_move_the_copy_statistic(sweeps):
    copy = next(s for s in sweeps if s.metric == "copy_fraction")
    assert copy.separated(Z_MIN), copy.problems(Z_MIN)
    assert copy.means[0] < 0.25 and copy.means[-1] == 1.0


def test_classifier_judge_cannot_read_painted_digits_at_run_size_and_is_refused(painted):
    """The judge ladder must fall through to the label-free judge here."""
    judge = train_judge(painted, EvalConfig().judge_epochs, seed=0)
    with pytest.raises(JudgeError, match="below eval.min_judge_accuracy"):
        check_judge(judge, EvalConfig().min_judge_accuracy)


def test_colour_only_control_fails_the_shape_disturbances(painted):
    fid = V.disturbance_sweeps(V.ColourOnlyJudge(), painted.x_train, painted.y_train,
                               painted.x_holdout, n=N, repeats=REPEATS,
                               only=("swirl", "drop_classes"))
    assert all(not s.separated(Z_MIN) for s in fid), [s.means for s in fid]


def test_reference_reads_unseen_glyphs_and_separates_the_ladder(reference, reference_scores):
    assert reference.accuracy > 0.8  # on the run's holdout: glyphs it never trained on
    ag = O.rank_agreement(reference_scores, reference_scores)
    assert len(reference_scores) >= 6 and ag.kept >= 0.8 * ag.pairs, (
        {k: (s.mean, s.std) for k, s in reference_scores.items()})
    for worse in ("blurred", "collapsed", "swirled"):
        assert reference_scores[worse].mean > reference_scores["epoch_20"].mean


@pytest.mark.parametrize("control", ["colour-only", "untrained"])
def test_controls_misorder_the_checkpoints(control, painted, samples, reference_scores):
    """The ordering check can fail: features blind to the glyph do not rank as the reference."""
    judge = V.ColourOnlyJudge() if control == "colour-only" else V.random_judge(painted)
    ag = O.rank_agreement(reference_scores, O.score_samples(judge, painted.x_holdout, samples))
    assert ag.tau < TAU_MIN, ag
