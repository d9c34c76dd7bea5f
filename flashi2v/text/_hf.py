"""Strict, offline loading helpers for Hugging Face format folders (internal)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from flashi2v.errors import CheckpointError

from flashi2v.weights.io import format_key_problems  # noqa: E402  (re-exported: one formatter for every loader)

__all__ = ["format_key_problems", "load_hf_model_strict", "load_tokenizer", "unify_dtype"]



@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar (our strict check reports real problems itself)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def unify_dtype(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """Put every floating parameter in one dtype (transformers keeps some modules in fp32 on half loads,
    the official code does not). ``dtype=None`` uses the dtype of the first parameter."""
    if dtype is None:
        dtype = next(model.parameters()).dtype
    return model.to(dtype)


def load_hf_model_strict(
    model_cls: Any,
    folder: str | Path,
    *,
    model_type: str,
    dtype: torch.dtype | None,
    ignore_unexpected: tuple[str, ...] = (),
    **kwargs: Any,
) -> Any:
    """``model_cls.from_pretrained(folder)`` offline; missing, unexpected (except ``ignore_unexpected`` regexes) or
    mis-shaped weights raise one :class:`CheckpointError` instead of being randomly initialised."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder {folder} does not exist; pass a local Hugging Face format folder")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json; pass a Hugging Face format folder (config.json + weights)")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types here
        raise CheckpointError(f"cannot read the model config in {folder}: {str(exc).splitlines()[0]}") from exc
    if getattr(config, "model_type", None) != model_type:
        raise CheckpointError(
            f"{folder} holds a '{getattr(config, 'model_type', None)}' model, expected '{model_type}'; "
            "point to the right folder"
        )
    try:
        with quiet_transformers():
            model, info = model_cls.from_pretrained(
                str(folder),
                config=config,
                local_files_only=True,
                dtype=dtype if dtype is not None else "auto",
                output_loading_info=True,
                **kwargs,
            )
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load the weights in {folder}: {first}") from exc
    unexpected = [k for k in info.get("unexpected_keys", ()) if not any(re.match(p, k) for p in ignore_unexpected)]
    problem = format_key_problems(
        f"weights in {folder}",
        info.get("missing_keys", ()),
        unexpected,
        info.get("mismatched_keys", ()),
        hint="the folder is incomplete or belongs to a different model; re-export it",
    )
    if problem is None and info.get("error_msgs"):
        problem = f"cannot load the weights in {folder}: {str(info['error_msgs'][0]).splitlines()[0]}"
    if problem is not None:
        raise CheckpointError(problem)
    return unify_dtype(model, dtype)


def load_tokenizer(path: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained(path)`` offline, with a one-line CheckpointError on failure."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"tokenizer folder {path} does not exist; pass the folder with tokenizer.json / spiece.model "
            "(for Wan2.1: <Wan2.1 folder>/google/umt5-xxl)"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load a tokenizer from {path}: {first}") from exc
