"""Metrics for evaluating generated videos against ground truth (procedural-world clips, reference videos).

Videos are ``[T, H, W, 3]`` **uint8** (0..255) or **float in [0, 1]**, numpy arrays or torch tensors; both give the
same numbers. Pure functions, no learned models. See ``docs/metrics.md`` for definitions, units, directions
(higher/lower is better) and deviations from the references (Wang et al. 2004, VBench).

* fidelity: :func:`mse`, :func:`psnr`, :func:`first_frame_psnr`, :func:`ssim`
* over time: :func:`chunk_bounds`, :func:`chunkwise`, :func:`chunkwise_psnr`, :func:`chunkwise_ssim`,
  :func:`chunkwise_mse`
* objects: :func:`track_colour`, :func:`trajectory_error`, :func:`motion_direction_agreement`, :func:`shape_iou`
* motion: :func:`optical_flow`, :func:`dynamic_degree`, :func:`temporal_flicker`
* camera: :func:`camera_shift`, :func:`camera_direction_agreement`
* colour: :func:`colour_drift`, :func:`mean_lab`
* reports: :func:`plot_chunkwise`, :func:`markdown_table`
"""

from ._common import FrameMetric
from .camera import CameraShift, camera_direction_agreement, camera_shift
from .chunks import (
    ChunkScores,
    chunk_bounds,
    chunkwise,
    chunkwise_mse,
    chunkwise_psnr,
    chunkwise_ssim,
)
from .colour import ColourDrift, colour_drift, mean_lab
from .fidelity import PSNR_MAX_DB, first_frame_psnr, mse, psnr, ssim
from .motion import (
    DynamicDegree,
    TemporalFlicker,
    dynamic_degree,
    optical_flow,
    temporal_flicker,
    top_fraction_mean,
)
from .report import markdown_table, plot_chunkwise
from .tracking import (
    DirectionAgreement,
    TrajectoryError,
    motion_direction_agreement,
    shape_iou,
    track_colour,
    trajectory_error,
)

__all__ = [
    "PSNR_MAX_DB",
    "CameraShift",
    "ChunkScores",
    "ColourDrift",
    "DirectionAgreement",
    "DynamicDegree",
    "FrameMetric",
    "TemporalFlicker",
    "TrajectoryError",
    "camera_direction_agreement",
    "camera_shift",
    "chunk_bounds",
    "chunkwise",
    "chunkwise_mse",
    "chunkwise_psnr",
    "chunkwise_ssim",
    "colour_drift",
    "dynamic_degree",
    "first_frame_psnr",
    "markdown_table",
    "mean_lab",
    "motion_direction_agreement",
    "mse",
    "optical_flow",
    "plot_chunkwise",
    "psnr",
    "shape_iou",
    "ssim",
    "temporal_flicker",
    "top_fraction_mean",
    "track_colour",
    "trajectory_error",
]
