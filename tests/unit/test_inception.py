"""The optional standard FID: the FID Inception-v3 loads a weight file by name from a local
path (s3:// in tests/integration/test_evaluate_s3.py), gives 2048-d pool3 features, its FID is
≈ 0 for a set against itself and grows with a disturbance, a wrong file fails naming the file
and the knob, and evaluation reports `fid_inception` without letting it decide anything.

Nothing is downloaded: the weights are a seeded random network of the same architecture,
saved to a temporary file. Its BatchNorm statistics are calibrated on a few digits (one
forward in train mode) so the features are O(1), as a trained network's are; with the
default statistics they shrink layer after layer to ~1e-7 and every FID is ~1e-12.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from flows.params import RETRAIN_OPTIONS, ParamsError, params_from_options
from gan.core.config import EvalConfig, GateConfig
from gan.core.records import Report
from gan.data.prepare import PreparedData
from gan.eval.evaluate import Champion, evaluate_generator, gate
from gan.eval.inception import (
    STANDARD_SHA256,
    Inception,
    InceptionError,
    InceptionFID,
    load_inception,
)
from gan.eval.judge import train_judge
from gan.eval.report import render_markdown
from gan.nets.inception import FIDInceptionV3, tf1_resize_bilinear
from gan.nets.judge_net import JudgeArch, JudgeNet

KNOB = "eval.inception_weights"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One intra-op thread for this module (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def random_net(tiny_digits: PreparedData) -> FIDInceptionV3:
    """A seeded random FID Inception-v3, BatchNorm statistics set from 8 digits."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0  # running stats := this batch's
    with torch.no_grad():
        net.train()(tiny_digits.x_train[:8].float())
    return net.eval()


@pytest.fixture(scope="module")
def weights(random_net: FIDInceptionV3, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "fid_inception.pth"
    torch.save(random_net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def loaded(weights: Path) -> Inception:
    return load_inception(str(weights))


def test_architecture_is_the_published_one(random_net: FIDInceptionV3):
    # torchvision's Inception-v3 has 27,161,264 parameters; without its auxiliary classifier
    # (3,326,696) and with the TF graph's 1008 logits instead of 1000 (+8 × 2049): 23,850,960.
    assert sum(p.numel() for p in random_net.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    sd = random_net.state_dict()
    # names and shapes as in pytorch-fid's / torch-fidelity's files
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert sd["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert sd["fc.weight"].shape == (1008, 2048) and sd["fc.bias"].shape == (1008,)


def test_tf1_bilinear_resize_is_not_torch_bilinear():
    x = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])  # (1, 1, 2, 2)
    # TF1 resize_bilinear: source = destination · in/out (0, .5, 1, 1.5), clamped at the edge
    want = torch.tensor([[0.0, 1.0, 2.0, 2.0], [2.0, 3.0, 4.0, 4.0],
                         [4.0, 5.0, 6.0, 6.0], [4.0, 5.0, 6.0, 6.0]])
    assert torch.equal(tf1_resize_bilinear(x, 4)[0, 0], want)
    torch_style = nn.functional.interpolate(x, size=4, mode="bilinear", align_corners=False)
    assert not torch.equal(torch_style[0, 0], want)  # the convention matters


def test_loaded_by_name_gives_the_same_2048_features(loaded, random_net, weights, tiny_digits):
    grey = tiny_digits.x_holdout[:3].float()  # (3, 1, 28, 28)
    with torch.no_grad():
        got, want = loaded.net(grey), random_net(grey)
    assert got.shape == (3, 2048) and torch.isfinite(got).all()
    assert got.abs().mean() > 0.01  # O(1) features, not a vanished signal
    # BatchNorm folded into the convs: the same function up to float32 rounding (here both
    # are ~7e-5 of the largest feature away from the float64 result)
    assert (got - want).abs().max() <= 1e-3 * want.abs().max()
    assert loaded.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert not loaded.standard and loaded.describe()["uri"] == str(weights)
    assert load_inception(f"file://{weights}").sha256 == loaded.sha256


def test_grey_is_repeated_and_pixels_quantised_as_image_files(loaded, tiny_digits):
    grey = tiny_digits.x_holdout[:2].float()  # (2, 1, 28, 28)
    x = FIDInceptionV3.preprocess(grey)
    assert x.shape == (2, 3, 299, 299)
    assert -1.0 <= float(x.min()) and float(x.max()) <= 127 / 128  # (uint8 − 128) / 128
    with torch.no_grad():
        f = loaded.net(grey)
        assert torch.equal(f, loaded.net(grey.expand(-1, 3, -1, -1)))  # grey = R = G = B
        # less than half a grey level (1/255 in [-1, 1] is 2/255): the same uint8 image
        assert torch.equal(f, loaded.net((grey + 0.3 / 255).clamp(-1, 1)))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(loaded, tiny_digits):
    ref = tiny_digits.x_holdout[:8].float()  # (8, 1, 28, 28)
    fid = InceptionFID(loaded, ref)
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    same, small, large = (fid((ref + s * noise).clamp(-1, 1)) for s in (0.0, 0.15, 0.5))
    print(f"\nInception FID (random weights): self {same:.3g}, noise 0.15 {small:.4g}, "
          f"noise 0.5 {large:.4g}; {fid.cost()}")
    assert abs(same) < 1e-3 * small < 1e-3 * large
    assert 0 < small < large
    assert fid.cost()["images"] == 32 and fid.cost()["device"] == "cpu"


def _fail_with(path: Path | str, *fragments: str) -> None:
    with pytest.raises(InceptionError) as e:
        load_inception(str(path))
    for text in (str(path), KNOB, *fragments):
        assert text in str(e.value), str(e.value)


def test_missing_unreadable_or_foreign_files_name_the_file_and_the_knob(tmp_path, random_net):
    _fail_with(tmp_path / "nowhere.pth", "cannot be read")
    (tmp_path / "junk.pth").write_bytes(b"not a weight file at all")
    _fail_with(tmp_path / "junk.pth", "not a PyTorch weight file")
    # a pickle that would run code: weights_only refuses it
    (tmp_path / "code.pth").write_bytes(pickle.dumps(Path("/etc"), protocol=2))
    _fail_with(tmp_path / "code.pth", "not a PyTorch weight file")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pth")
    _fail_with(tmp_path / "list.pth", "not a state dict of named tensors")
    # another network: the project's own judge
    judge = JudgeNet(JudgeArch(channels=1, image_size=28, num_classes=10))
    torch.save(judge.state_dict(), tmp_path / "judge.pth")
    _fail_with(tmp_path / "judge.pth", "not the FID Inception-v3 architecture",
               "missing tensors (e.g. Conv2d_1a_3x3.conv.weight")
    # torchvision's ImageNet Inception: 1000 logits, not the FID graph's 1008
    sd = {k: v.clone() for k, v in random_net.state_dict().items()}
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(sd, tmp_path / "imagenet.pth")
    _fail_with(tmp_path / "imagenet.pth", "wrong shapes", "fc.weight (1000, 2048)")
    sd = {k: v.clone() for k, v in random_net.state_dict().items()}
    sd["Mixed_6a.branch3x3.conv.weight"][0] = float("nan")
    torch.save(sd, tmp_path / "nan.pth")
    _fail_with(tmp_path / "nan.pth", "non-finite")


def test_urls_and_s3_without_storage_are_refused(weights):
    _fail_with("https://example.org/pt_inception-2015-12-05-6726825d.pth",
               "nothing is downloaded")
    _fail_with("s3://bucket/inception.pth", "needs object storage")
    with pytest.raises(ValueError, match="(?s)inception_weights.*nothing is downloaded"):
        EvalConfig(inception_weights="https://example.org/w.pth")
    assert EvalConfig(inception_weights="  ").inception_weights is None  # empty form field
    assert EvalConfig(inception_weights=f" {weights} ").inception_weights == str(weights)
    assert EvalConfig().inception_weights is None  # off by default


def test_retrain_flag_sets_the_field_and_refuses_urls_before_any_work():
    params = params_from_options(inception_weights="s3://team/pt_inception.pth")
    assert params.eval.inception_weights == "s3://team/pt_inception.pth"
    assert params.resolve()[3].inception_weights == "s3://team/pt_inception.pth"
    assert params_from_options().resolve()[3].inception_weights is None
    with pytest.raises(ParamsError, match="eval.inception_weights.*nothing is downloaded"):
        params_from_options(inception_weights="https://example.org/w.pth")
    assert any(o.flags == "--inception-weights" for o in RETRAIN_OPTIONS)


def test_files_without_batchnorm_counters_load(random_net, tmp_path):
    sd = {k: v for k, v in random_net.state_dict().items()
          if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pth")
    assert load_inception(str(tmp_path / "old.pth")).net.num_features == 2048


# --------------------------------------------------------------------------- in evaluation


class Pick(nn.Module):
    """A 'generator' returning images of a fixed set, chosen by the latent (as in
    test_ssl_judge)."""

    def __init__(self, images: Tensor) -> None:
        super().__init__()
        self.latent_dim, self.images = 8, images.float()

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        u = torch.special.ndtr(z[:, 0])  # (B,) uniform in (0, 1)
        return self.images[(u * len(self.images)).long().clamp(max=len(self.images) - 1)]


class Projection(nn.Module):
    """A cheap stand-in for the 299×299 network in the plumbing test: 16 fixed projections."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.randn(28 * 28, 16, generator=torch.Generator().manual_seed(0))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x.flatten(1) @ self.w / 28)  # (B, 16)


def test_evaluation_reports_fid_inception_and_the_gate_ignores_it(tiny_digits):
    cfg = EvalConfig(n_samples=100, n_seeds=2, judge_epochs=3, min_judge_accuracy=0.0)
    judge = train_judge(tiny_digits, cfg.judge_epochs, seed=0)
    inception = Inception(net=Projection(), uri="s3://b/inception.pth",  # type: ignore[arg-type]
                          sha256=STANDARD_SHA256)
    gen = Pick(tiny_digits.x_holdout)
    plain, _ = evaluate_generator(gen, tiny_digits, judge, cfg)
    result, _ = evaluate_generator(gen, tiny_digits, judge, cfg, inception=inception,
                                   champion=Champion("1", Pick(tiny_digits.x_train)))
    assert "fid_inception" not in plain["metrics"] and plain["inception"] is None
    m = result["metrics"]
    assert len(result["per_seed"]["fid_inception"]) == 2 and m["fid_inception"] > 0
    assert "fid_inception" in result["spread"] and result["floors"]["fid_inception"] >= 0
    # the judge's metrics are unchanged; the champion is not re-scored in Inception space
    assert m["fid"] == plain["metrics"]["fid"] and plain["floors"].items() <= \
        result["floors"].items()
    assert "fid_inception" not in result["champion"].metrics
    holdout, n = len(tiny_digits.x_holdout), 100
    assert result["inception"]["images"] == holdout + 2 * n + n  # reference, seeds, floor
    assert result["inception"]["standard"] and result["inception"]["uri"].endswith(".pth")

    def report(r: dict) -> Report:
        return Report(run_id="t", dataset_version="v", report_uri="s3://b/r.json",
                      markdown_uri="s3://b/r.md", **r)

    md = render_markdown(report(result))
    assert "## Standard FID (Inception-v3)" in md and "does not decide promotion" in md
    assert "the standard file" in md and "## Standard FID" not in render_markdown(report(plain))
    # worse in Inception space only: the gate decides exactly as without it
    worse = report(result).model_copy(update={"metrics": {**m, "fid_inception": 1e9}})
    a, b = gate(report(plain), None, GateConfig()), gate(worse, None, GateConfig())
    assert (a.promote, a.reasons) == (b.promote, b.reasons)
    unknown = {**result["inception"], "standard": False}
    md = render_markdown(report(result).model_copy(update={"inception": unknown}))
    assert "NOT the standard file: not comparable with published numbers" in md
