"""Grids and curves decode as PNGs of the expected size and pixel values (numpy + Pillow)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gan.eval import pictures


def decode(png: bytes) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def grid_side(n: int, tile: int, pad: int = 2) -> int:
    return n * (tile + pad) + pad


def test_sample_grid_is_a_png_of_the_expected_size():
    x = torch.rand(100, 1, 28, 28) * 2 - 1
    img = decode(pictures.sample_grid_png(x, ncol=10, scale=2))
    assert img.mode == "L"
    assert img.size == (2 * grid_side(10, 28), 2 * grid_side(10, 28))  # (W, H) = (604, 604)


def test_partial_last_row_and_rgb():
    x = torch.rand(7, 3, 8, 12) * 2 - 1
    img = decode(pictures.sample_grid_png(x, ncol=3, scale=1))
    assert img.mode == "RGB"
    assert img.size == (grid_side(3, 12), grid_side(3, 8))
    # The two empty cells of the last row stay the white padding.
    arr = np.asarray(img)
    y0, x0 = 2 + 2 * (8 + 2), 2 + 1 * (12 + 2)
    assert (arr[y0:y0 + 8, x0:] == 255).all()


def test_pixels_map_minus_one_to_black_and_one_to_white():
    x = torch.stack([torch.full((1, 4, 4), -1.0), torch.full((1, 4, 4), 1.0),
                     torch.full((1, 4, 4), float("nan"))])
    g = pictures.image_grid(x, ncol=3, pad=1)
    assert g.shape == (6, 16, 1)
    assert (g[1:5, 1:5] == 0).all() and (g[1:5, 6:10] == 255).all()
    assert (g[1:5, 11:15] == 0).all()  # NaN pixels are drawn black, not garbage
    assert (g[0] == 255).all()  # padding


def test_real_vs_generated_puts_real_left_and_generated_right():
    real = torch.full((20, 1, 28, 28), -1.0)  # black
    fake = torch.full((30, 1, 28, 28), 1.0)  # white
    img = decode(pictures.real_vs_generated_png(real, fake, ncol=10, scale=2, gap=8))
    left_w, right_w = 2 * grid_side(10, 28), 2 * grid_side(10, 28)
    assert img.size == (left_w + 16 + right_w, 2 * grid_side(3, 28))
    arr = np.asarray(img)
    assert arr[10, 10] == 0  # inside the first real tile
    assert arr[10, left_w + 16 + 10] == 255  # inside the first generated tile
    assert arr[10, left_w + 8] == 128  # the grey gap


def test_curves_png_from_history_and_without_history():
    history = [{"epoch": e, "loss_d": 1.0 / e, "loss_g": 0.5 * e, "d_real": 0.7, "d_fake": 0.3}
               for e in range(1, 6)]
    with_h = decode(pictures.curves_png(history))
    empty = decode(pictures.curves_png([]))
    assert with_h.size == empty.size == (1000, 400)
    # Lines were drawn: the picture with a history has more distinct colours than the empty one.
    assert len(with_h.getcolors(1 << 16) or []) > len(empty.getcolors(1 << 16) or [])


@pytest.mark.parametrize("bad", [torch.zeros(0, 1, 4, 4), torch.zeros(4, 4)])
def test_bad_images_are_refused(bad: torch.Tensor):
    with pytest.raises(ValueError, match="image_grid needs"):
        pictures.image_grid(bad, ncol=2)
