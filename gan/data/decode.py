"""Decoding image files (PNG, JPEG, WebP) into equal-sized uint8 arrays, with Pillow.

What this module is: `decode_images(files, size, channels, max_bad_fraction)` turns encoded
images into one (N, C, size, size) uint8 array by one stated policy:

    0. size None (`data.image_size` left empty): `auto_image_size` of the files' shorter
       sides (read from their headers), the rule every source shares:

       the median shorter side if it is one of AUTO_SIZES (28, 32, 64, 128), else the next
       of those up, capped at 128 (digits 8 px → 28, MNIST 28, CIFAR 32, photos → 128);
    1. open with Pillow, accepting only PNG, JPEG and WebP (by content, not by file name);
       images over `PIL.Image.MAX_IMAGE_PIXELS` pixels are refused (decompression bombs);
    2. to 8-bit RGB: 16-bit grey is scaled (>> 8), palettes expanded, CMYK/YCbCr converted,
       transparency composited onto black; any other mode is a bad file ("unsupported mode");
    3. centre crop to a square (the shorter side), then resize to size × size with Pillow's
       antialiased Lanczos filter (skipped when the crop already has that size);
    4. channels: 3 keeps RGB; 1 takes luma (ITU-R 601-2, Pillow's "L" weights); None picks 1
       when every image is grey (R = G = B everywhere), else 3.

A bad file (zero bytes, not an image, truncated or corrupt, unsupported mode) is refused with
a DataError naming it, unless `max_bad_fraction` > 0: then bad files up to that share of all
files are skipped and returned with their reasons (more is still an error, naming the first).

What it is not: no listing or reading of files (`gan.data.images`, `gan.data.parquet`), no
labels, no storage.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from gan.data.validate import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FORMATS = ("PNG", "JPEG", "WEBP")  # what Pillow may open; others are "not an image" here
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_TO_RGB = ("1", "L", "P", "RGB", "CMYK", "YCbCr")  # modes that convert to RGB as they are
_WITH_ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")
LUMA = np.array([299, 587, 114], dtype=np.uint32)  # Pillow's RGB → L weights (per mille)
AUTO_SIZES = (28, 32, 64, 128)  # what an empty data.image_size snaps to (the models' sizes)


class BadImage(Exception):
    """One file that cannot be used; the message is the reason (the caller adds the name)."""


@dataclass(frozen=True)
class Decoded:
    """Images decoded by `decode_images`; `kept[i]` is the input index of image i."""

    x: np.ndarray  # (N, C, size, size) uint8
    kept: np.ndarray  # (N,) int64 indices into the files given
    skipped: tuple[tuple[str, str], ...]  # (file, reason) of each bad file left out


def is_image_name(name: str) -> bool:
    """True for the file names the `images` source reads (.png, .jpg, .jpeg, .webp)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def auto_image_size(sides: Sequence[int]) -> int:
    """The image size an empty `data.image_size` means: the median of the images' shorter
    `sides` (the lower one for an even count) if it is in AUTO_SIZES, else the next size of
    AUTO_SIZES up, capped at the largest (bigger images are shrunk to it)."""
    if not sides:
        raise DataError("no images to take an image size from")
    native = sorted(sides)[(len(sides) - 1) // 2]
    return next((s for s in AUTO_SIZES if s >= native), AUTO_SIZES[-1])


def _shorter_side(data: bytes) -> int | None:
    """The shorter side from an image's header (nothing decoded); None when it is unreadable
    (the decoding pass names such a file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                return min(img.size)
    except Exception:  # any failure here is reported, with its file, by decode_one
        return None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any accepted mode → 8-bit RGB (step 2 of the policy); BadImage for others."""
    if img.mode in _SIXTEEN_BIT:
        a = np.asarray(img, dtype=np.uint16)  # (H, W) 0..65535
        return Image.fromarray((a >> 8).astype(np.uint8)).convert("RGB")
    if img.mode in _WITH_ALPHA or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    if img.mode in _TO_RGB:
        return img.convert("RGB")
    raise BadImage(f"unsupported image mode {img.mode!r} (use 8-bit grey, RGB or RGBA)")


def _square(img: Image.Image, size: int) -> Image.Image:
    """Centre crop to the shorter side, then antialiased resize to size × size (step 3)."""
    w, h = img.size
    side = min(w, h)
    if (w, h) != (side, side):
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return img


def decode_one(data: bytes, size: int) -> np.ndarray:
    """One encoded image → (size, size, 3) uint8 RGB; BadImage (reason) when unusable;
    DataError for a decompression bomb (never skipped: it is an attack, not a bad file)."""
    if not data:
        raise BadImage("file is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                img.load()  # decodes now: truncation and corruption surface here
                rgb = _square(_to_rgb(img), size)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DataError(f"decompression-bomb guard: {e} (the limit is "
                            f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS})") from e
        except UnidentifiedImageError as e:
            raise BadImage("not a PNG, JPEG or WebP image") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:  # Pillow's decoder errors
            raise BadImage(f"truncated or corrupt image ({e})") from e
    return np.asarray(rgb, dtype=np.uint8)  # (size, size, 3)


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) uint8 with C = 1 or 3 → (N, channels, H, W): grey is repeated to RGB; RGB
    becomes luma (Pillow's "L" weights, rounded)."""
    c = x.shape[1]
    if c == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=1)
    luma = np.tensordot(LUMA, x.astype(np.uint32), axes=([0], [1]))  # (N, H, W)
    return ((luma + 500) // 1000).astype(np.uint8)[:, None]


def is_grey(x: np.ndarray) -> bool:
    """True when every image of an (N, 3, H, W) batch has R = G = B everywhere."""
    return bool(np.all(x[:, 0] == x[:, 1]) and np.all(x[:, 1] == x[:, 2]))


def decode_images(files: Sequence[tuple[str, bytes]], *, size: int | None,
                  channels: int | None, max_bad_fraction: float = 0.0) -> Decoded:
    """(name, bytes) pairs → Decoded (N, C, size, size) uint8 images by the module's policy;
    `size` None: `auto_image_size` of the readable files' shorter sides (step 0)."""
    if not files:
        raise DataError("no images to decode")
    if size is None:
        sides = [s for _, data in files if data and (s := _shorter_side(data)) is not None]
        size = auto_image_size(sides) if sides else AUTO_SIZES[0]  # none readable: step 1 says
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    kept: list[int] = []
    bad: list[tuple[str, str]] = []
    for i, (name, data) in enumerate(files):
        try:
            rgb = decode_one(data, size)  # (size, size, 3)
        except BadImage as e:
            bad.append((name, str(e)))
            continue
        except DataError as e:
            raise DataError(f"{name}: {e}") from e
        out[len(kept)] = rgb.transpose(2, 0, 1)
        kept.append(i)
    _check_bad(bad, len(files), max_bad_fraction)
    x = out[: len(kept)]
    if not len(kept):
        raise DataError(f"none of the {len(files)} files is a usable image "
                        f"(first: {bad[0][0]}: {bad[0][1]})")
    target = channels if channels is not None else (1 if is_grey(x) else 3)
    if bad:
        log.warning("skipped %d bad image files of %d (max_bad_fraction %g); first: %s: %s",
                    len(bad), len(files), max_bad_fraction, *bad[0])
    return Decoded(x=to_channels(x, target), kept=np.asarray(kept, dtype=np.int64),
                   skipped=tuple(bad))


def _check_bad(bad: list[tuple[str, str]], total: int, max_bad_fraction: float) -> None:
    """DataError naming the first bad file unless their share is within the allowed one."""
    if not bad or len(bad) <= max_bad_fraction * total:
        return
    name, reason = bad[0]
    more = f" (and {len(bad) - 1} more bad files of {total})" if len(bad) > 1 else ""
    hint = ("set data.max_bad_fraction to skip a share of bad files" if max_bad_fraction == 0
            else f"{len(bad)} of {total} is over data.max_bad_fraction = {max_bad_fraction:g}")
    raise DataError(f"{name}: {reason}{more}; {hint}")
