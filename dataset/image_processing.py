"""Verify one image and normalise it: RGB, long side <= ``max_side`` (aspect ratio kept), re-encoded.

``normalise_image(data, settings)`` is pure (bytes in, bytes out) so it can run in a thread pool and be cached
by the caller. Rejections raise ``ImageRejected`` with a reason that ends up counted in the manifest:

* ``corrupt``: zero-byte, truncated, not an image, or a file Pillow cannot decode.
* ``too_large``: more pixels than ``settings.max_pixels`` (checked from the header, before decoding), or
  Pillow's own decompression-bomb error (above twice ``Image.MAX_IMAGE_PIXELS``).

Mode handling: CMYK / YCbCr / LAB / L / 1 become RGB with Pillow's converters; palette images become RGBA first
when they carry transparency; alpha (RGBA, LA, PA, La, RGBa) is composited on white, because a VL model given
transparent pixels sees whatever the decoder leaves there (usually black); 16/32-bit integer and float grey
(I;16, I, F) are scaled to 8 bits. EXIF orientation is applied so a photo taken sideways is shown upright.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Bump when the pixels written for unchanged settings change: it is part of every cache key.
PIPELINE_VERSION = 1
FORMATS = ("auto", "jpeg", "png")
# Sources in these formats are already lossy; re-encoding them as PNG would only make files bigger.
LOSSY_SOURCES = {"JPEG", "MPO", "WEBP"}
JPEG_QUALITY = 90
_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}
_WIDE_GREY = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_EXIF_ORIENTATION = 0x0112
_PASSTHROUGH = {"JPEG": ".jpg", "PNG": ".png"}  # source format -> extension it is stored with unchanged


class ImageRejected(ValueError):
    """The image cannot be used; ``reason`` is the manifest counter it belongs to."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageSettings:
    """What the normalised image looks like; every field is part of the cache key.

    Args:
        max_side: the long side after resizing (smaller images are never upscaled).
        fmt: ``auto`` (JPEG for JPEG/WebP sources, PNG otherwise, so lossless stays lossless), ``jpeg``
            or ``png``.
        max_pixels: width*height above which an image is rejected as ``too_large`` before decoding.
    """

    max_side: int = 448
    fmt: str = "auto"
    max_pixels: int = Image.MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if self.max_side < 1:
            raise ValueError(f"image max_side must be >= 1, got {self.max_side}")
        if self.fmt not in FORMATS:
            raise ValueError(f"image format must be one of {FORMATS}, got {self.fmt!r}")
        if self.max_pixels < 1:
            raise ValueError(f"image max_pixels must be >= 1, got {self.max_pixels}")

    def tag(self) -> str:
        """Short, file-name-safe summary of the settings for cache file names."""
        return f"v{PIPELINE_VERSION}-s{self.max_side}-{self.fmt}-p{self.max_pixels}"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P":
        # palette images with a transparent index must keep it, or the transparent area turns a random colour
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in _WIDE_GREY:
        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        if hi > 255.0:  # 16-bit data: use the 16-bit range rather than clipping everything above 255 to white
            arr = arr * (255.0 / 65535.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _resized(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def output_extension(source_format: str, fmt: str) -> str:
    if fmt == "jpeg" or (fmt == "auto" and source_format in LOSSY_SOURCES):
        return ".jpg"
    return ".png"


def normalise_image(data: bytes, settings: ImageSettings) -> tuple[bytes, str, dict]:
    """Verify ``data`` and return (encoded bytes, extension ``.jpg``/``.png``, info).

    ``info`` holds the source ``format``, ``mode`` and ``size``, the output ``size`` and ``passthrough``:
    an RGB JPEG/PNG that needs no resizing, rotation or format change is returned byte for byte.
    Raises ImageRejected (reason ``corrupt`` or ``too_large``).
    """
    if not data:
        raise ImageRejected("corrupt", "zero-byte file")
    try:
        # verify() checks structure without decoding pixels, and it leaves the image unusable, so open twice
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
            if w * h > settings.max_pixels:
                raise ImageRejected("too_large", f"{w}x{h} = {w * h} pixels > limit {settings.max_pixels}")
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            src_format, src_mode = img.format or "unknown", img.mode
            img.load()  # full decode: a truncated file fails here (LOAD_TRUNCATED_IMAGES stays False)
            upright = img.getexif().get(_EXIF_ORIENTATION, 1) == 1
            img = ImageOps.exif_transpose(img)
            out = _resized(_to_rgb(img), settings.max_side)
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_large", str(e)) from None
    except UnidentifiedImageError as e:
        raise ImageRejected("corrupt", f"not an image ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow signals truncated/garbled data with OSError, SyntaxError (bad headers) or ValueError
        if isinstance(e, ImageRejected):
            raise
        raise ImageRejected("corrupt", f"{type(e).__name__}: {e}") from None
    ext = output_extension(src_format, settings.fmt)
    info = {"format": src_format, "mode": src_mode, "size": [w, h], "out_size": list(out.size)}
    if upright and src_mode == "RGB" and out.size == (w, h) and _PASSTHROUGH.get(src_format) == ext:
        # already what we would write: keep the bytes (re-encoding a JPEG only loses quality and grows it)
        return data, ext, {**info, "passthrough": True}
    buf = io.BytesIO()
    if ext == ".jpg":
        out.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        out.save(buf, format="PNG")
    return buf.getvalue(), ext, {**info, "passthrough": False}
