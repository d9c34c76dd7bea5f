"""A BERT encoder and its WordPiece tokenizer in plain torch + ``tokenizers``, for MiniLM (the default model's text
encoder).

Why not transformers' ``BertModel``: importing it costs about 3 s per process on this machine (``AutoTokenizer``
alone 1 s), a seventh of a whole default-model ``flashi2v generate``. The maths is BERT's (post-LayerNorm
blocks, exact-erf GELU, absolute positions, token types all 0 here) and the weights keep the Hugging Face names, so
any BERT folder (``config.json`` + ``model.safetensors``) loads; ``tests/test_text_encoders.py`` checks the
states of every layer and the token ids against transformers'.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flashi2v.errors import CheckpointError
from flashi2v.weights.io import format_key_problems, read_json_object, read_safetensors

__all__ = ["BertConfig", "BertEncoder", "WordPieceTokenizer"]

_IGNORED = ("pooler.", "embeddings.position_ids")  # a pooler is not used; position ids are computed


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = read_json_object(path)
        if raw.get("model_type") != "bert":
            raise CheckpointError(f"{path.parent} holds a '{raw.get('model_type')}' model, expected 'bert'; "
                                  "point to the right folder")
        if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"{path}: only BERT with hidden_act 'gelu' and absolute positions is supported, got "
                                  f"{raw.get('hidden_act')!r} / {raw.get('position_embedding_type')!r}")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "bert", "architectures": ["BertModel"], "position_embedding_type": "absolute",
                **{f.name: getattr(self, f.name) for f in fields(self)}}


def _embedding(num: int, dim: int) -> nn.Embedding:
    """``nn.Embedding`` whose random init is skipped on the meta device (there ``normal_`` imports torch._dynamo,
    1 s); weights built there are always assigned from a checkpoint."""
    emb = nn.Embedding(num, dim, _weight=torch.empty(num, dim))
    if not emb.weight.is_meta:
        nn.init.normal_(emb.weight)
    return emb


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = _embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = _embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = _embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor, token_types: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(ids) + self.token_type_embeddings(token_types)
        x = x + self.position_embeddings(torch.arange(ids.shape[1], device=ids.device))[None]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, d)


class _DenseNorm(nn.Module):
    """``LayerNorm(dense(x) + residual)`` (BERT's ``*Output`` modules)."""

    def __init__(self, c: BertConfig, d_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c, c.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Stack(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class BertEncoder(nn.Module):
    """BERT without a pooler. ``forward(ids, mask, upto=k)`` returns the hidden state after layer ``k`` (0: the
    embeddings; default: the last layer), running only the layers it needs. Inference only (no dropout)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Stack(config)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        n = self.config.num_hidden_layers if upto is None else upto
        x = self.embeddings(ids, torch.zeros_like(ids))
        keep = mask.bool()[:, None, None, :]  # [B, 1, 1, L]: every query attends to the real tokens only
        for layer in self.encoder.layer[:n]:
            x = layer(x, keep)
        return x

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, dtype: torch.dtype | None = None) -> BertEncoder:
        """Load a Hugging Face BERT folder (``config.json`` + ``model.safetensors``) strictly: missing, unexpected
        (other than a pooler) or mis-shaped weights raise one :class:`CheckpointError`. ``dtype=None`` keeps the
        stored dtype."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"model folder {folder} does not exist; pass a local Hugging Face format folder")
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"{folder} has no config.json; pass a Hugging Face format folder "
                                  "(config.json + weights)")
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{folder} has no model.safetensors; pass a BERT folder saved in safetensors")
        config = BertConfig.from_json(folder / "config.json")
        with torch.device("meta"):
            model = cls(config)
        sd = {k.removeprefix("bert."): v for k, v in read_safetensors(weights).items()}
        sd = {k: v for k, v in sd.items() if not k.startswith(_IGNORED)}
        expected = model.state_dict()
        mismatched = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in sd.items()
                      if k in expected and v.shape != expected[k].shape]
        problem = format_key_problems(f"weights in {folder}", [k for k in expected if k not in sd],
                                      [k for k in sd if k not in expected], mismatched,
                                      hint="the folder is incomplete or belongs to a different model; re-export it")
        if problem:
            raise CheckpointError(problem)
        if dtype is None:
            dtype = next(iter(sd.values())).dtype
        model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
        return model.eval().requires_grad_(False)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` (Hugging Face names: transformers' ``BertModel`` loads it)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")


class WordPieceTokenizer:
    """The folder's ``tokenizer.json`` run by the ``tokenizers`` library, called like a transformers tokenizer for
    what :class:`~flashi2v.text.base.TextEncoder` needs: special tokens added, truncated and right-padded to
    ``max_length``, ``input_ids`` and ``attention_mask`` as tensors."""

    padding_side = "right"

    def __init__(self, folder: str | os.PathLike) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"tokenizer folder {folder} has no tokenizer.json; pass the folder of a fast "
                                  "(tokenizers) BERT tokenizer")
        try:
            self.backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the Rust library raises plain Exceptions
            raise CheckpointError(f"cannot load a tokenizer from {path}: {str(exc).splitlines()[0]}") from exc
        self.folder = folder
        self.pad_id = self.backend.token_to_id("[PAD]")
        if self.pad_id is None:
            raise CheckpointError(f"{path} has no [PAD] token; it is not a BERT WordPiece tokenizer")

    def __call__(self, prompts: list[str], *, max_length: int, **_: Any) -> dict[str, torch.Tensor]:
        self.backend.enable_truncation(max_length=max_length)
        self.backend.enable_padding(length=max_length, pad_id=self.pad_id, pad_token="[PAD]", direction="right")
        enc = self.backend.encode_batch(prompts, add_special_tokens=True)
        return {"input_ids": torch.tensor([e.ids for e in enc], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in enc], dtype=torch.long)}

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.backend.id_to_token(int(i)) for i in ids]

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Copy the tokenizer files of the source folder (``tokenizer.json`` and its companions)."""
        import shutil

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, folder / name)
