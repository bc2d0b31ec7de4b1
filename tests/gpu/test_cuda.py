"""GPU tier (`pytest -m gpu`, on a machine with a CUDA device; deselected everywhere else).

What a GPU user relies on beyond the CPU tests: the default model trains on CUDA in fp32 and
under bf16 autocast with finite losses, its weights stay float32 (autocast casts activations,
never parameters), and a checkpoint written on the GPU loads on a CPU-only machine
(`torch.load(weights_only=True)` with CPU tensors) and generates the same images there.
"""

from __future__ import annotations

import math

import pytest
import torch

from gan.core.config import DataConfig, resolve_configs
from gan.data.prepare import prepare_arrays
from gan.train.checkpoint import generator_from_checkpoint, save_checkpoint
from gan.train.loop import train_local

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def digits():
    return prepare_arrays(DataConfig(limit=640))


@pytest.mark.parametrize("preset", ["default", "r3gan"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_default_model_trains_on_cuda(digits, bf16, preset):
    """Also the r3gan recipe: R1/R2's double backward and the fixed-filter resampling on CUDA."""
    model_cfg, train_cfg = resolve_configs(preset, train={"epochs": 2, "use_gpu": True,
                                                            "bf16": bf16})
    seen: list[dict] = []
    state = train_local(digits, model_cfg, train_cfg, lambda m, _c: seen.append(m),
                        device="cuda", autocast_dtype=torch.bfloat16 if bf16 else None)
    assert len(seen) == 2
    for m in seen:
        assert math.isfinite(m["loss_d"]) and math.isfinite(m["loss_g"]), m
    params = list(state.G.parameters()) + list(state.D.parameters())
    assert all(p.is_cuda and p.dtype == torch.float32 for p in params)


def test_gpu_checkpoint_generates_the_same_images_on_cpu(digits):
    model_cfg, train_cfg = resolve_configs("default", train={"epochs": 1, "use_gpu": True})
    state = train_local(digits, model_cfg, train_cfg, device="cuda")
    blob = save_checkpoint(state, dataset_version=digits.version)
    g_cpu = generator_from_checkpoint(blob).eval()
    z = torch.randn(16, model_cfg.latent_dim)
    y = torch.arange(16) % 10
    with torch.no_grad():
        want = state.generator.eval()(z.cuda(), y.cuda()).float().cpu()
        got = g_cpu(z, y)
    assert got.shape == (16, 1, 28, 28)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
