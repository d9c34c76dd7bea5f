"""Reading and writing state-dict files, and the strict comparison of a state dict with a model."""

from __future__ import annotations

import json
import os
import uuid
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ..errors import CheckpointError, InputError

# Prefixes that training wrappers put in front of parameter names (DDP/FSDP1 "module.", torch.compile "_orig_mod.").
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_fsdp_wrapped_module.", "model.")
# Containers some checkpoints nest the state dict in.
_CONTAINER_KEYS = ("state_dict", "model", "module", "model_state_dict")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a single-file state dict: ``.safetensors``, or a torch pickle (``.pt``, ``.pth``, ``.bin``, ``.ckpt``).

    Pickles are read with ``weights_only=True`` (no arbitrary code) and memory-mapped. A state dict nested in a
    ``{"state_dict": ...}``-style container is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            sd = read_safetensors(path)
        else:
            try:
                sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
                sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # corrupt or not a checkpoint at all
        raise CheckpointError(f"cannot read checkpoint {path}: {_pickle_error(e)}") from None
    for _ in range(2):
        if isinstance(sd, Mapping) and len(sd) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            inner = next((sd[k] for k in _CONTAINER_KEYS if k in sd and isinstance(sd[k], Mapping)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not contain a state dict of tensors")
    return strip_wrapper_prefixes(dict(sd))


def _pickle_error(e: Exception) -> str:
    """One line for a failed ``torch.load(weights_only=True)``; torch's own text for a file that is no pickle of
    tensors is several lines of advice that does not apply here (``weights_only=False`` is never used)."""
    text = str(e)
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        detail = _first_sentence(next((line for line in detail.splitlines() if line.strip()), ""))
        return (f"not a PyTorch state dict of tensors{f' ({detail})' if detail else ''}; pass a .safetensors file or a "
                ".pt/.pth state dict, and check that the file is complete")
    return f"{type(e).__name__}: {_first_sentence(text)}; check that the file is complete (re-copy or re-download it)"


def _first_sentence(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line.split(". ", 1)[0].strip()[:200]


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, read one at a time (peak memory ~ the file) into aligned storage."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: aligned(f.get_tensor(k)) for k in f.keys()}
    except Exception as e:  # truncated, corrupt, or not safetensors at all
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {first}; check that the file is "
                              "complete (re-copy or re-download it)") from None


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in ``path`` (a config or index of a model folder); one-line CheckpointError otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found; the folder must contain {path.name}") from None
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read {path} ({first}); fix or regenerate the file") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}; fix or regenerate the file")
    return data


def aligned(t: torch.Tensor, alignment: int = 64) -> torch.Tensor:
    """``t`` itself, or a copy in fresh storage if its CPU data is not ``alignment``-byte aligned.

    safetensors returns tensors at arbitrary offsets of its buffer; CPU matmul kernels then take different
    (slower, and not bit-identical) code paths than for the same weights in torch-allocated memory.
    """
    if t.device.type == "cpu" and t.numel() and t.data_ptr() % alignment:
        return t.clone(memory_format=torch.contiguous_format)
    return t


def strip_wrapper_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a prefix shared by *every* key that training wrappers add (``module.``, ``_orig_mod.``...)."""
    changed = True
    while changed and sd:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def save_safetensors(sd: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(path), metadata=metadata)
    # safetensors creates the file with mode 0600; give it the usual mode (0666 minus the umask), like open() does
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_save_safetensors(sd: Mapping[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict | None = None) -> None:
    """:func:`save_safetensors` to a temporary file beside ``path``, then rename: readers never see half a file, and
    a failed write leaves nothing behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_safetensors(sd, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, then rename: readers never see half a file. A path
    that cannot be written (an existing folder, a parent that is a file or not writable) is a one-line InputError."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is an existing folder; give a file path")
    check_output_path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InputError(f"cannot write {path}: {_os_reason(e)}") from None
        raise


def _os_reason(e: OSError) -> str:
    return e.strerror or " ".join(str(e).split())


def check_output_path(path: str | os.PathLike) -> None:
    """Raise a one-line InputError now, before any long work, when ``path`` could not be created later: one of its
    parents is a file, or the nearest existing parent folder is not writable. Creates nothing."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"cannot write {path}: {parent} is a file, not a folder; choose another path")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"cannot write {path}: no permission to write in {parent}; choose another path")
            return


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p path`` for an output folder; a one-line InputError when it cannot be made (a file in the way, no
    permission, a read-only file system)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot create the folder {path}: a file of that name exists; choose another path")
    check_output_path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder {path}: {_os_reason(e)}; choose another path") from None
    return path


def make_temp_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Create ``final``'s missing parent folders and the (new) temporary folder ``tmp`` beside it, for a write that
    renames ``tmp`` to ``final`` when done; a one-line InputError when ``final``'s folder cannot be written."""
    tmp, final = Path(tmp), Path(final)
    check_output_path(final)
    make_dirs(final.parent)
    try:
        tmp.mkdir()
    except OSError as e:
        raise InputError(f"cannot write {final}: {_os_reason(e)}; choose another path") from None
    return tmp


def remove_path(p: str | os.PathLike) -> None:
    """Best-effort removal of a file, folder or symlink (cleanup of temporaries; never raises)."""
    p = Path(p)
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()
    except OSError:
        pass


def replace_path(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished ``tmp`` to ``final``. A file replaces a file atomically; an existing folder is first moved
    aside (so a failure in between keeps one of the two) and deleted after the rename."""
    tmp, final = Path(tmp), Path(final)
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:10]}.old")
        os.replace(final, old)
        os.replace(tmp, final)
        remove_path(old)
    else:
        os.replace(tmp, final)


@contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary directory next to ``final``; it is renamed to ``final`` only if the block succeeds.

    An interrupted or failed write never leaves a folder with the final name (nor a half-updated one when
    ``overwrite`` replaces an existing folder).
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise CheckpointError(f"{final} already exists; choose another path or pass overwrite=True")
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:10]}")
    make_temp_dir(tmp, final)  # (not mkdtemp: its 0700 mode would end up on the finished folder)
    try:
        yield tmp
        replace_path(tmp, final)
    except BaseException:
        remove_path(tmp)
        raise


MAX_LISTED = 6


def short_list(items: Iterable[Any], limit: int = MAX_LISTED) -> str:
    """``a, b, c, ... (+N more)``: the first ``limit`` items (sorted) of a possibly long list."""
    items = sorted((str(i) for i in items))
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f", ... (+{more} more)" if more > 0 else "")


def format_key_problems(
    source: str,
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mismatched: Iterable[tuple[str, tuple, tuple]] = (),
    hint: str = "",
    extra: Iterable[str] = (),
) -> str | None:
    """One line describing missing / unexpected / mis-shaped keys (``mismatched`` = (name, checkpoint shape, model
    shape)) plus any ``extra`` problem descriptions, or None when there is nothing wrong. Every strict loader
    (DiT, VAE, text encoders) reports through this."""
    missing, unexpected, mismatched, extra = list(missing), list(unexpected), list(mismatched), list(extra)
    if not (missing or unexpected or mismatched or extra):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {short_list(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {short_list(unexpected)}")
    if mismatched:
        shown = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in mismatched]
        parts.append(f"{len(mismatched)} shape mismatches: {short_list(shown, 4)}")
    parts += extra
    msg = f"{source} does not match the model: " + "; ".join(parts)
    return msg + (f"; {hint}" if hint else "")


def compare_keys(
    model_shapes: Mapping[str, tuple[int, ...]],
    sd: Mapping[str, torch.Tensor],
    allow_missing: Iterable[str] = (),
    source: str = "checkpoint",
) -> list[str]:
    """Check ``sd`` against the model's parameter shapes; return the missing keys that ``allow_missing`` permits.

    Anything else missing, any unexpected key and any shape mismatch raises one :class:`CheckpointError` that lists
    them all.
    """
    allow = tuple(allow_missing)
    missing = [k for k in model_shapes if k not in sd]
    bad_missing = [k for k in missing if not allow or not k.startswith(allow)]
    unexpected = [k for k in sd if k not in model_shapes]
    shapes = [(k, tuple(sd[k].shape), tuple(model_shapes[k])) for k in sd
              if k in model_shapes and tuple(sd[k].shape) != tuple(model_shapes[k])]
    problem = format_key_problems(source, bad_missing, unexpected, shapes)
    if problem:
        raise CheckpointError(problem)
    return [k for k in missing if k not in bad_missing]
