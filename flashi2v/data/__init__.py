"""Training data: meta JSON reading, the official filter rules, LMDB storage (see docs/data_filter.md)."""

from .filter import FilterConfig, FilterSummary, filter_samples, run_filter
from .lmdb_store import LMDBReader, write_filtered_samples, write_lmdb
from .meta import ProbeError, VideoInfo, probe_video, read_annotations
