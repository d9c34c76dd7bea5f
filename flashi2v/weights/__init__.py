"""Checkpoint formats: official single files, diffusers folders, MindSpeed names, our model folder."""

from .io import read_state_dict
from .transformer import LoadReport, infer_config, load_transformer, save_transformer

__all__ = ["LoadReport", "infer_config", "load_transformer", "read_state_dict", "save_transformer"]
