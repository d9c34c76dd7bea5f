"""Condition-image loading and the official FlashI2V image transform.

The official inference pipeline turns the condition image into the model range like this (spec §5.2):

1. PIL image -> RGB uint8 tensor [3, H, W];
2. ``CenterCropResizeVideo((height, width), bicubic, align_corners=False, antialias=True)`` on the **uint8** tensor:
   resize so that the short side *relative to the target aspect* fits, then centre-crop;
3. ``/255`` then ``2x - 1``.

:func:`center_crop_resize` + :func:`to_model_range` reproduce steps 2-3 bit for bit (checked against the golden
``transforms/image_transform.safetensors``). PyTorch's uint8 bicubic-antialias kernel rounds differently from the
float kernel (up to 4/255 apart), so the resize must run on uint8 exactly as the official code does.

:func:`load_image` is step 1, extended to more inputs (paths, PIL images, numpy arrays, tensors) and modes. Pillow is
imported lazily so that ``import flashi2v.media`` works without it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = [
    "ALPHA_MODES",
    "center_crop_resize",
    "crop_resize_size",
    "fit_resolution",
    "load_image",
    "preprocess_image",
    "to_model_range",
    "validate_size",
]

ImageSource = Union[str, os.PathLike, "PIL.Image.Image", np.ndarray, torch.Tensor]  # noqa: F821

#: How transparent pixels are turned into RGB: composite on a white or black background, or drop the alpha channel
#: (what the official code does implicitly via ``PIL.Image.convert("RGB")``; the colour hidden under fully
#: transparent pixels then shows up, which is often black or garbage).
ALPHA_MODES = ("white", "black", "drop")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------------------------------
# Size helpers
# ----------------------------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be a positive whole number of pixels, got {value!r}")
    value = int(value)
    if value <= 0:
        raise InputError(f"{name} must be a positive whole number of pixels, got {value}")
    return value


def validate_size(height: int, width: int, multiple: int = 16) -> Tuple[int, int]:
    """Check that ``height`` and ``width`` are positive multiples of ``multiple`` and return them as ints.

    FlashI2V needs multiples of 16 (VAE stride 8 x patch size 2). Raises :class:`InputError` with the two nearest
    valid values, e.g. ``height 500 is not a multiple of 16; try 496 or 512``.
    """
    multiple = _check_positive_int("multiple", multiple)
    out = []
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
            raise InputError(f"{name} must be a positive multiple of {multiple}, got {value!r}")
        if isinstance(value, (float, np.floating)) and not float(value).is_integer():
            lo = max(multiple, int(math.floor(value / multiple)) * multiple)
            raise InputError(f"{name} {value} is not a whole number; try {lo} or {lo + multiple}")
        value = int(value)
        if value <= 0:
            raise InputError(f"{name} {value} must be a positive multiple of {multiple}; try {multiple}")
        if value % multiple:
            lo = (value // multiple) * multiple
            hi = lo + multiple
            hint = f"try {hi}" if lo == 0 else f"try {lo} or {hi}"
            raise InputError(f"{name} {value} is not a multiple of {multiple}; {hint}")
        out.append(value)
    return out[0], out[1]


def fit_resolution(
    image_h: int, image_w: int, target_area: int = 480 * 832, multiple: int = 16
) -> Tuple[int, int]:
    """Pick an output ``(height, width)`` for an ``image_h x image_w`` input in aspect-preserving mode.

    Rule: among all pairs ``(h, w)`` that are multiples of ``multiple`` with ``h * w <= target_area`` (so memory
    never exceeds the budget), choose the one that minimises

        2 * |ln((h / w) / (image_h / image_w))|  +  |ln(h * w / target_area)|

    i.e. a relative aspect error costs twice as much as the same relative area shortfall (aspect error means
    cropping content away; a smaller area only lowers the resolution). Ties go to the larger area, then the larger
    height. The small aspect error that remains is removed by the centre crop of :func:`center_crop_resize`.

    Examples (default 480*832 budget): 480x832 -> (480, 832); 1080x1920 (16:9) -> (480, 832), the usual Wan 480p
    size; 1000x1000 -> (624, 624); 768x1024 (3:4) -> (544, 720).
    """
    image_h = _check_positive_int("image height", image_h)
    image_w = _check_positive_int("image width", image_w)
    target_area = _check_positive_int("target_area", target_area)
    multiple = _check_positive_int("multiple", multiple)
    if target_area < multiple * multiple:
        raise InputError(
            f"target_area {target_area} is smaller than one {multiple}x{multiple} block; use at least "
            f"{multiple * multiple}"
        )
    log_r = math.log(image_h / image_w)
    log_a = math.log(target_area)
    cells = target_area // (multiple * multiple)  # i * j <= cells
    best_key = None
    best = (multiple, multiple)
    for i in range(1, cells + 1):
        h = i * multiple
        jmax = cells // i
        jf = h / math.exp(log_r) / multiple  # ideal width in blocks for this height
        for j in {min(jmax, max(1, math.floor(jf))), min(jmax, max(1, math.ceil(jf)))}:
            w = j * multiple
            cost = 2.0 * abs(math.log(h / w) - log_r) + abs(math.log(h * w) - log_a)
            key = (round(cost, 12), -h * w, -h)
            if best_key is None or key < best_key:
                best_key, best = key, (h, w)
    return best


def crop_resize_size(image_h: int, image_w: int, height: int, width: int) -> Tuple[int, int, int, int]:
    """The official resize size and crop offsets: ``(new_h, new_w, top, left)``.

    If ``image_h / image_w < height / width`` the height is matched (``new_h = height``,
    ``new_w = ceil(height * image_w / image_h)``), otherwise the width (``new_w = width``,
    ``new_h = ceil(width * image_h / image_w)``). The crop offsets are ``round((new - target) / 2)`` with Python's
    round (half to even), as in the official code.
    """
    if image_h / image_w < height / width:
        new_h, new_w = height, int(math.ceil(height * image_w / image_h))
    else:
        new_h, new_w = int(math.ceil(width * image_h / image_w)), width
    top = int(round((new_h - height) / 2.0))
    left = int(round((new_w - width) / 2.0))
    return new_h, new_w, top, left


# ----------------------------------------------------------------------------------------------------------------
# Transform
# ----------------------------------------------------------------------------------------------------------------


def center_crop_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The official ``CenterCropResizeVideo`` (bicubic, antialias, align_corners=False) on a uint8 tensor.

    ``images`` is uint8 ``[N, C, H, W]`` or ``[C, H, W]`` (also works for video frames as ``[T, C, H, W]``); the result
    has the same rank and dtype with spatial size ``height x width``. The resize runs on CPU (PyTorch's uint8
    bicubic-antialias kernel is CPU-only) and the result is moved back to the input device.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(
            f"center_crop_resize expects a uint8 torch tensor [N,3,H,W] or [3,H,W], got {type(images).__name__}; "
            "use load_image() first"
        )
    if images.dtype != torch.uint8:
        raise InputError(
            f"center_crop_resize expects uint8 pixels (the official transform resizes uint8), got {images.dtype}; "
            "convert with (x * 255).round().clamp(0, 255).to(torch.uint8)"
        )
    if images.ndim not in (3, 4) or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise InputError(
            f"center_crop_resize expects shape [N,C,H,W] or [C,H,W] with H, W > 0, got {list(images.shape)}"
        )
    height = _check_positive_int("height", height)
    width = _check_positive_int("width", width)
    squeeze = images.ndim == 3
    x = images.unsqueeze(0) if squeeze else images
    device = x.device
    x = x.to("cpu").contiguous()
    h, w = x.shape[-2:]
    new_h, new_w, top, left = crop_resize_size(h, w, height, width)
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    x = x[..., top : top + height, left : left + width].contiguous()
    x = x.to(device)
    return x[0] if squeeze else x


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1], exactly the official ``ToTensorAfterResize`` (/255) + ``AENorm`` (2x-1)."""
    if not isinstance(images_uint8, torch.Tensor) or images_uint8.dtype != torch.uint8:
        got = images_uint8.dtype if isinstance(images_uint8, torch.Tensor) else type(images_uint8).__name__
        raise InputError(f"to_model_range expects a uint8 torch tensor, got {got}")
    x = images_uint8.float() / 255.0
    return 2.0 * x - 1.0


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def _import_pil():
    try:
        from PIL import Image, ImageOps
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("reading images needs Pillow; install it with `pip install pillow`") from e
    return Image, ImageOps


def _has_transparency(img) -> bool:
    return img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info


def _pil_to_rgb_uint8(img, alpha: str, exif_transpose: bool, what: str) -> torch.Tensor:
    Image, ImageOps = _import_pil()
    if exif_transpose:
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit greyscale (PNG/TIFF); Pillow's convert("RGB") would clip it, so scale 0..65535 -> 0..255.
        a = np.asarray(img).astype(np.float64)
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(a, mode="L")
    elif mode == "F":
        a = np.asarray(img).astype(np.float64)
        if not np.isfinite(a).all():
            raise InputError(f"{what} contains NaN or infinite pixel values; fix the image file")
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        img = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), mode="L")
    if _has_transparency(img):
        rgba = img.convert("RGBA")
        if alpha == "drop":
            img = rgba.convert("RGB")
        else:
            colour = (255, 255, 255, 255) if alpha == "white" else (0, 0, 0, 255)
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, colour), rgba).convert("RGB")
    elif img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except (ValueError, OSError) as e:
            raise InputError(
                f"{what} has colour mode {img.mode!r}, which cannot be converted to RGB ({_one_line(e)}); "
                "save it as an RGB PNG or JPEG"
            ) from e
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what} could not be converted to an RGB image (got array shape {arr.shape})")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def _array_to_pil(arr: np.ndarray, what: str, layout_hint: str):
    """numpy HWC / HW array (uint8, uint16, bool, other ints in 0..255, float in [0, 1]) -> PIL image."""
    Image, _ = _import_pil()
    if arr.ndim not in (2, 3):
        raise InputError(f"{what} must have 2 or 3 dimensions (HWC or HW), got shape {list(arr.shape)}")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4):
        if arr.shape[0] in (1, 3, 4):
            raise InputError(f"{what} looks channels-first {list(arr.shape)}; {layout_hint}")
        raise InputError(f"{what} has {arr.shape[-1]} channels (shape {list(arr.shape)}); expected 1, 3 or 4")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what} is empty (shape {list(arr.shape)})")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint8:
        a8 = arr
    elif arr.dtype == np.bool_:
        a8 = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        a8 = np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise InputError(
                f"{what} has integer dtype {arr.dtype} with values in [{lo}, {hi}]; integer pixels must be in "
                "[0, 255] (or use uint16 for 16-bit)"
            )
        a8 = arr.astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        a = arr.astype(np.float64)
        if not np.isfinite(a).all():
            raise InputError(f"{what} contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{what} is float with values in [{lo:.4g}, {hi:.4g}]; float pixels must be in [0, 1] "
                "(for [-1, 1] data pass (x + 1) / 2, for [0, 255] data convert to uint8)"
            )
        a8 = np.rint(a * 255.0).astype(np.uint8)
    else:
        raise InputError(f"{what} has unsupported dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    mode = {2: "L"}.get(a8.ndim) or {3: "RGB", 4: "RGBA"}[a8.shape[-1]]
    return Image.fromarray(np.ascontiguousarray(a8), mode=mode)


def load_image(src: ImageSource, *, alpha: str = "white", exif_transpose: bool = True) -> torch.Tensor:
    """Load a condition image as an RGB uint8 tensor ``[3, H, W]``.

    ``src`` may be:

    * a path (``str`` / ``os.PathLike``) to any image Pillow reads (PNG, JPEG, WebP, BMP, TIFF, GIF ...); animated
      files give their first frame;
    * a ``PIL.Image.Image``;
    * a numpy array in **HWC** (or HW greyscale) layout: uint8, uint16 (16-bit, scaled by 1/257), bool, or float in
      [0, 1] (scaled by 255 and rounded);
    * a torch tensor in **CHW** (or HW, or ``[1, C, H, W]``) layout with the same dtype rules; it is copied to CPU.

    Modes: greyscale (L, 1, 16-bit I;16/I), palette (P), CMYK, YCbCr, ... are converted to RGB. Transparent images
    (RGBA, LA, PA, palette or RGB with a transparency key) are composited on white by default; ``alpha="black"``
    composites on black and ``alpha="drop"`` discards the alpha channel like the official code. EXIF orientation
    (e.g. phone photos) is applied when ``exif_transpose`` is true (the official code ignores it).

    Raises :class:`InputError` naming the file for missing, unreadable or non-image files.
    """
    if alpha not in ALPHA_MODES:
        raise InputError(f"alpha={alpha!r} is not supported; use one of {', '.join(ALPHA_MODES)}")
    Image, _ = _import_pil()

    if isinstance(src, (str, os.PathLike)):
        path = Path(os.fspath(src)).expanduser()
        what = f"image '{path}'"
        if not path.exists():
            raise InputError(f"image file '{path}' does not exist; check the path")
        if path.is_dir():
            raise InputError(f"image path '{path}' is a folder, not an image file; give the path of a PNG/JPEG/WebP")
        try:
            with Image.open(path) as img:
                img.seek(0)
                img.load()
                return _pil_to_rgb_uint8(img, alpha, exif_transpose, what)
        except InputError:
            raise
        except Image.DecompressionBombError as e:
            raise InputError(f"{what} is too large to load safely ({_one_line(e)}); downscale it first") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            # UnidentifiedImageError is an OSError; truncated files raise OSError on load().
            raise InputError(
                f"could not read {what}: not a valid or complete image file ({_one_line(e)}); re-save it as PNG, "
                "JPEG or WebP"
            ) from e

    if isinstance(src, Image.Image):
        return _pil_to_rgb_uint8(src, alpha, exif_transpose, "the given PIL image")

    if isinstance(src, np.ndarray):
        img = _array_to_pil(src, "the image array", "numpy images must be HWC; use arr.transpose(1, 2, 0)")
        return _pil_to_rgb_uint8(img, alpha, False, "the image array")

    if isinstance(src, torch.Tensor):
        t = src.detach().to("cpu")
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3:
            if t.shape[0] not in (1, 3, 4) and t.shape[-1] in (1, 3, 4):
                raise InputError(
                    f"the image tensor looks channels-last {list(t.shape)}; torch images must be CHW, "
                    "use t.permute(2, 0, 1)"
                )
            if t.shape[0] not in (1, 3, 4):
                raise InputError(
                    f"the image tensor has {t.shape[0]} channels (shape {list(t.shape)}); expected 1, 3 or 4"
                )
            t = t.permute(1, 2, 0)
        elif t.ndim != 2:
            raise InputError(f"the image tensor must be [C,H,W], [1,C,H,W] or [H,W], got shape {list(src.shape)}")
        if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
            t = t.float()
        img = _array_to_pil(t.numpy(), "the image tensor", "torch images must be CHW")
        return _pil_to_rgb_uint8(img, alpha, False, "the image tensor")

    raise InputError(
        f"cannot load an image from a {type(src).__name__}; pass a file path, a PIL image, a numpy HWC array or a "
        "torch CHW tensor"
    )


def preprocess_image(
    image: ImageSource,
    height: int,
    width: int,
    *,
    alpha: str = "white",
    exif_transpose: bool = True,
    multiple: int = 16,
) -> torch.Tensor:
    """Load + official transform: returns float32 ``[1, 3, height, width]`` in [-1, 1].

    ``height`` and ``width`` are first checked with :func:`validate_size` (``multiple=16`` for FlashI2V; pass
    ``multiple=1`` to skip). Add the time axis with ``.unsqueeze(2)`` before VAE encoding.
    """
    height, width = validate_size(height, width, multiple)
    pixels = load_image(image, alpha=alpha, exif_transpose=exif_transpose)
    return to_model_range(center_crop_resize(pixels.unsqueeze(0), height, width))
