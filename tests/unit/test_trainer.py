"""gan.train.loop: the loop, report/checkpoint cadence, determinism, resume, divergence guard."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from gan.core.config import ModelConfig, TrainConfig
from gan.data.prepare import PreparedData
from gan.nets.models import sample_latent
from gan.train.checkpoint import load_checkpoint, save_checkpoint, state_from_checkpoint
from gan.train.loop import DivergenceError, local_batches, main, run_epochs, train_local
from gan.train.state import make_state

torch.set_num_threads(1)

MODEL = ModelConfig(arch="mlp", latent_dim=8, image_size=8, num_classes=4, g_hidden=(16,),
                    d_hidden=(16,), d_dropout=0.2)  # dropout: the global RNG must be seeded too
CDCGAN = ModelConfig(arch="dcgan", conditional=True, spectral_norm=True, latent_dim=8,
                     image_size=8, base_channels=4, num_classes=4)


def tiny_data(n: int = 64) -> PreparedData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1  # (n, 1, 8, 8) in [-1, 1]
    y = torch.arange(n) % 4
    return PreparedData(x, y, x[:8], y[:8], num_classes=4, name="tiny", version="v0")


def train_cfg(**kw: Any) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 16, "lr_g": 1e-3, "lr_d": 1e-3,
                          "ema_decay": 0.9, **kw})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_metrics_and_checkpoint_cadence() -> None:
    calls: list[tuple[dict, bytes | None]] = []

    def report(metrics: dict, checkpoint: Any) -> None:
        calls.append((metrics, checkpoint() if checkpoint else None))

    state = train_local(tiny_data(), MODEL, train_cfg(epochs=3, checkpoint_every=2), report)
    assert [c[0]["epoch"] for c in calls] == [1, 2, 3]
    assert [c[1] is not None for c in calls] == [False, True, True]  # every 2nd and the last
    m = calls[-1][0]
    assert {"epoch", "step", "loss_d", "loss_g", "d_real", "d_fake", "images_per_s",
            "epoch_time_s"} <= set(m)
    assert m["step"] == 12 and state.step == 12 and state.epoch == 3  # 4 whole batches / epoch
    assert 0 < m["d_real"] < 1 and 0 < m["d_fake"] < 1 and m["images_per_s"] > 0
    json.dumps(m)  # plain python numbers
    ckpt = load_checkpoint(calls[1][1])
    assert ckpt["epoch"] == 2 and ckpt["dataset_version"] == "v0"
    assert [h["epoch"] for h in state.history] == [1, 2, 3]


def test_non_chief_ranks_report_without_checkpoints() -> None:
    tc = train_cfg(epochs=2, checkpoint_every=1)
    state = make_state(MODEL, tc)
    data = tiny_data()
    seen: list[Any] = []
    run_epochs(state, local_batches(data.x_train, data.y_train, tc), tc,
               lambda m, c: seen.append(c), is_chief=False)
    assert seen == [None, None]


def test_seeded_runs_are_identical_and_seeds_matter() -> None:
    a = train_local(tiny_data(), CDCGAN, train_cfg(loss="wgan-gp"))
    b = train_local(tiny_data(), CDCGAN, train_cfg(loss="wgan-gp"))
    c = train_local(tiny_data(), CDCGAN, train_cfg(loss="wgan-gp", seed=1))
    assert same_weights(a.G, b.G) and same_weights(a.D, b.D) and same_weights(a.G_ema, b.G_ema)
    assert not same_weights(a.G, c.G)
    assert "gp" in a.history[-1] and a.history[-1]["gp"] >= 0


@pytest.mark.parametrize("model", [MODEL, CDCGAN], ids=["mlp-dropout", "cdcgan-sn"])
def test_resume_equals_straight_run(model: ModelConfig) -> None:
    data, tc = tiny_data(), train_cfg(epochs=2)
    straight = train_local(data, model, tc)
    first = train_local(data, model, train_cfg(epochs=1))
    blob = save_checkpoint(first)
    resumed = state_from_checkpoint(load_checkpoint(blob), "cpu", train_cfg=tc)
    assert resumed.epoch == 1
    resumed = train_local(data, model, tc, state=resumed)  # continues at epoch 2
    assert resumed.epoch == 2 and resumed.step == straight.step
    for name in ("G", "D", "G_ema"):
        assert same_weights(getattr(straight, name), getattr(resumed, name)), name
    assert straight.opt_g.state_dict()["state"][0]["step"] == resumed.opt_g.state_dict()[
        "state"][0]["step"]
    drop = ("images_per_s", "epoch_time_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in straight.history] == [
        {k: v for k, v in h.items() if k not in drop} for h in resumed.history]


def test_d_steps_per_g_step_and_ema_switch() -> None:
    state = train_local(tiny_data(), MODEL, train_cfg(epochs=1, d_steps=2, ema_decay=0.0))
    assert state.step == 4
    assert int(state.opt_d.state_dict()["state"][0]["step"]) == 4
    assert int(state.opt_g.state_dict()["state"][0]["step"]) == 2
    assert state.G_ema is None and state.generator is state.G
    with_ema = train_local(tiny_data(), MODEL, train_cfg(epochs=1))
    assert with_ema.generator is with_ema.G_ema and with_ema.ema_updates == 4


def test_nan_batch_raises_divergence_naming_the_step() -> None:
    tc = train_cfg(epochs=1)
    state = make_state(MODEL, tc)
    good = torch.rand(16, 1, 8, 8) * 2 - 1
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    batches = [(good, torch.zeros(16, dtype=torch.long))] * 2 + [(bad, torch.zeros(16).long())]
    with pytest.raises(DivergenceError, match="at step 3: non-finite") as err:
        run_epochs(state, lambda epoch: batches, tc)
    assert err.value.step == 3


@pytest.mark.parametrize("loss", ["bce", "ns"])
def test_saturated_discriminator_raises_divergence(loss: str) -> None:
    # D learns 50 000× faster than G: it separates real from fake and stays there.
    tc = train_cfg(loss=loss, epochs=20, lr_d=0.05, lr_g=1e-6, divergence_patience=10,
                   ema_decay=0.0)
    with pytest.raises(DivergenceError, match="D saturated for 10 consecutive steps") as err:
        train_local(tiny_data(), ModelConfig(**{**MODEL.model_dump(), "d_dropout": 0.0}), tc)
    assert 10 <= err.value.step < 80


def test_data_that_does_not_fit_the_model_is_named() -> None:
    with pytest.raises(ValueError, match=r"images \(1, 8, 8\) but the model expects \(1, 28"):
        train_local(tiny_data(), ModelConfig(arch="mlp", g_hidden=(8,), d_hidden=(8,)),
                    train_cfg())
    with pytest.raises(ValueError, match="has 4 classes but model.num_classes is 2"):
        train_local(tiny_data(), CDCGAN.model_copy(update={"num_classes": 2}), train_cfg())


def test_trained_generator_samples_labelled_images() -> None:
    state = train_local(tiny_data(), CDCGAN, train_cfg(epochs=1))
    z = sample_latent(4, 8, torch.Generator().manual_seed(0))
    x = state.generator(z, torch.tensor([0, 1, 2, 3]))
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_smoke_mode_prints_epoch_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--smoke"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["epoch"] == 1 and lines[0]["checkpoint_bytes"] > 0
    # smoke: 200 digits, 167 in the train split (the split by pixel hash, pinned)
    assert lines[-1]["preset"] == "smoke" and lines[-1]["n_train"] == 167


def test_bf16_autocast_path_runs() -> None:
    # On GPU the distributed layer passes bf16; the same code path runs under CPU autocast.
    tc = train_cfg(epochs=1, loss="wgan-gp")
    state = train_local(tiny_data(), CDCGAN, tc, autocast_dtype=torch.bfloat16)
    m = state.history[-1]
    assert all(torch.isfinite(torch.tensor(m[k])) for k in ("loss_d", "loss_g", "gp"))
    assert not same_weights(state.G, make_state(CDCGAN, tc).G)


def test_separate_adam_betas_for_g_and_d():
    from gan.core.config import ModelConfig, TrainConfig
    from gan.train.state import make_state

    cfg = TrainConfig(beta1=0.5, beta2=0.999, beta1_d=0.0, beta2_d=0.9)
    st = make_state(ModelConfig(arch="mlp", g_hidden=(8,), d_hidden=(8,)), cfg)
    assert st.opt_g.param_groups[0]["betas"] == (0.5, 0.999)
    assert st.opt_d.param_groups[0]["betas"] == (0.0, 0.9)
    # Unset D betas fall back to G's.
    st = make_state(ModelConfig(arch="mlp", g_hidden=(8,), d_hidden=(8,)), TrainConfig(beta1=0.3))
    assert st.opt_d.param_groups[0]["betas"] == (0.3, 0.999)
