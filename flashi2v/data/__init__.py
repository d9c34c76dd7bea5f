"""Training data: meta JSON reading, the official filter rules, LMDB storage (docs/data_filter.md); frame-exact
PyAV reading, the clip dataset and aspect-ratio buckets (docs/dataset.md)."""

from .filter import FilterConfig, FilterSummary, filter_samples, run_filter
from .lmdb_store import LMDBReader, write_filtered_samples, write_lmdb
from .meta import ProbeError, VideoInfo, probe_video, read_annotations
from .buckets import BucketBatchSampler, Buckets
from .dataset import FlashI2VVideoDataset
from .video_reader import ClipError, probe, read_frames
from .latent_cache import LatentCacheDataset, encode_cache
