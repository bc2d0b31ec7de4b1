"""Judges validated on the painted colour digits (`gan.data.painted`; issue 22, item 3), at
small sizes.

The run sees 800 painted images (640 train, 160 holdout); the reference classifier is trained
on ten times more images painted from the *other* half of the glyphs, so its accuracy is
measured on the run's holdout, glyphs it never saw. The label-free judge — the one the judge
ladder uses on this data — must see what the reference sees: every disturbance worsens its
FID beyond the metric's noise, copies move the copy statistic, and it orders a run's
checkpoints (and a blurred, a collapsed and a swirled generator) as the reference does. The
classifier judge, trained on the run's 640 images, cannot read painted digits and is refused
by its own accuracy check; controls with colour-only or untrained features fail the checks.

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
from gan.eval.ssl_judge import SSLJudge, train_ssl_judge

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


def test_label_free_fid_worsens_beyond_noise_with_every_disturbance(sweeps):
    fid = [s for s in sweeps if s.metric == "fid" and s.disturbance != "copies"]
    assert len(fid) == 6
    problems = [p for s in fid for p in s.problems(Z_MIN)]
    assert problems == [], "\n".join(problems)


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


def test_label_free_judge_orders_checkpoints_as_the_reference(label_free, painted, samples,
                                                              reference_scores):
    ag = O.rank_agreement(reference_scores,
                          O.score_samples(label_free, painted.x_holdout, samples))
    assert ag.tau >= TAU_MIN, ag


@pytest.mark.parametrize("control", ["colour-only", "untrained"])
def test_controls_misorder_the_checkpoints(control, painted, samples, reference_scores):
    """The ordering check can fail: features blind to the glyph do not rank as the reference."""
    judge = V.ColourOnlyJudge() if control == "colour-only" else V.random_judge(painted)
    ag = O.rank_agreement(reference_scores, O.score_samples(judge, painted.x_holdout, samples))
    assert ag.tau < TAU_MIN, ag
