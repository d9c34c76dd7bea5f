"""Image and video I/O for FlashI2V: condition-image loading and the official transform, video post-processing,
MP4/GIF/PNG writing, video reading, grids and batch-mode text files. See ``docs/media.md``."""

from .image import (
    ALPHA_MODES,
    center_crop_resize,
    crop_resize_size,
    fit_resolution,
    load_image,
    preprocess_image,
    to_model_range,
    validate_size,
)
from .video import (
    VIDEO_FORMATS,
    check_output,
    crf_from_quality,
    make_grid,
    read_lines,
    read_prompt_image_pairs,
    read_video,
    resolve_format,
    to_uint8_frames,
    write_video,
)

__all__ = [
    "ALPHA_MODES",
    "VIDEO_FORMATS",
    "center_crop_resize",
    "check_output",
    "crf_from_quality",
    "crop_resize_size",
    "fit_resolution",
    "load_image",
    "make_grid",
    "preprocess_image",
    "read_lines",
    "read_prompt_image_pairs",
    "read_video",
    "resolve_format",
    "to_model_range",
    "to_uint8_frames",
    "validate_size",
    "write_video",
]
