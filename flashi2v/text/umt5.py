"""umT5 text encoder (Wan2.1 / FlashI2V) on top of transformers' ``UMT5EncoderModel``.

The official code (``flashi2v/modules/t5.py``, spec §7) has its own ``T5Encoder``. It computes exactly what
``UMT5EncoderModel`` computes (pre-norm RMS T5 layer norm, no 1/sqrt(d) scaling, per-layer relative position bias
with 32 bidirectional buckets and max distance 128, gated-GELU(tanh) FFN, final norm), so we use the transformers
module and only map the parameter names. Two details are made to match the official code exactly:

* attention: the official code adds (position bias, with the dtype's minimum at padded keys) to q·kᵀ and takes the
  softmax **in float32**, then casts back. transformers' eager path takes the softmax in the compute dtype and its
  SDPA path leaves the precision to the kernel, so we register our own attention function
  ``"t5_official_fp32_softmax"`` that does the official computation, and use it by default (pass
  ``attn_implementation="sdpa"`` or ``"eager"`` to use transformers' own). In float32 all three agree.
* activation: ``gelu_pytorch_tanh`` (``nn.GELU(approximate="tanh")``, the official kernel) instead of ``gelu_new``
  (the same function written out, which differs by float rounding).

Official → Hugging Face key map (``N`` = block index; every shape is identical)::

    token_embedding.weight                    -> shared.weight   (encoder.embed_tokens.weight is tied to it)
    blocks.N.norm1.weight                     -> encoder.block.N.layer.0.layer_norm.weight
    blocks.N.attn.q.weight                    -> encoder.block.N.layer.0.SelfAttention.q.weight
    blocks.N.attn.k.weight                    -> encoder.block.N.layer.0.SelfAttention.k.weight
    blocks.N.attn.v.weight                    -> encoder.block.N.layer.0.SelfAttention.v.weight
    blocks.N.attn.o.weight                    -> encoder.block.N.layer.0.SelfAttention.o.weight
    blocks.N.pos_embedding.embedding.weight   -> encoder.block.N.layer.0.SelfAttention.relative_attention_bias.weight
    blocks.N.norm2.weight                     -> encoder.block.N.layer.1.layer_norm.weight
    blocks.N.ffn.gate.0.weight                -> encoder.block.N.layer.1.DenseReluDense.wi_0.weight  (GELU branch)
    blocks.N.ffn.fc1.weight                   -> encoder.block.N.layer.1.DenseReluDense.wi_1.weight  (linear branch)
    blocks.N.ffn.fc2.weight                   -> encoder.block.N.layer.1.DenseReluDense.wo.weight
    norm.weight                               -> encoder.final_layer_norm.weight

(official FFN: ``fc2(fc1(x) * gelu(gate(x)))``; HF: ``wo(gelu(wi_0(x)) * wi_1(x))``.) The real checkpoint
``models_t5_umt5-xxl-enc-bf16.pth`` has 242 tensors and 5,680,910,336 parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flashi2v.errors import CheckpointError, ConfigError
from flashi2v.weights.io import read_state_dict
from flashi2v.text._hf import format_key_problems, load_hf_model_strict, load_tokenizer
from flashi2v.text.base import TextEncoder

__all__ = [
    "ATTN_IMPLEMENTATION",
    "OFFICIAL_TO_HF",
    "UMT5_XXL",
    "UMT5TextEncoder",
    "convert_official_state_dict",
    "hf_to_official_key",
    "load_official_state_dict",
    "official_to_hf_key",
    "umt5_config",
]

#: hyper-parameters of the umT5-XXL encoder used by Wan2.1 / FlashI2V
UMT5_XXL: dict[str, Any] = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    num_heads=64,
    d_ff=10240,
    num_layers=24,
    num_buckets=32,
    max_distance=128,
)

#: explicit official -> HF name map; ``{n}`` is the block index (the module docstring shows it as a table)
OFFICIAL_TO_HF: tuple[tuple[str, str], ...] = (
    ("token_embedding.weight", "shared.weight"),
    ("blocks.{n}.norm1.weight", "encoder.block.{n}.layer.0.layer_norm.weight"),
    ("blocks.{n}.attn.q.weight", "encoder.block.{n}.layer.0.SelfAttention.q.weight"),
    ("blocks.{n}.attn.k.weight", "encoder.block.{n}.layer.0.SelfAttention.k.weight"),
    ("blocks.{n}.attn.v.weight", "encoder.block.{n}.layer.0.SelfAttention.v.weight"),
    ("blocks.{n}.attn.o.weight", "encoder.block.{n}.layer.0.SelfAttention.o.weight"),
    (
        "blocks.{n}.pos_embedding.embedding.weight",
        "encoder.block.{n}.layer.0.SelfAttention.relative_attention_bias.weight",
    ),
    ("blocks.{n}.norm2.weight", "encoder.block.{n}.layer.1.layer_norm.weight"),
    ("blocks.{n}.ffn.gate.0.weight", "encoder.block.{n}.layer.1.DenseReluDense.wi_0.weight"),
    ("blocks.{n}.ffn.fc1.weight", "encoder.block.{n}.layer.1.DenseReluDense.wi_1.weight"),
    ("blocks.{n}.ffn.fc2.weight", "encoder.block.{n}.layer.1.DenseReluDense.wo.weight"),
    ("norm.weight", "encoder.final_layer_norm.weight"),
)

_TIED_HF_KEYS = {"encoder.embed_tokens.weight": "shared.weight"}


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(re.escape("{n}"), r"(\d+)"))


_O2H = [(_template_regex(o), h) for o, h in OFFICIAL_TO_HF]
_H2O = [(_template_regex(h), o) for o, h in OFFICIAL_TO_HF]


def _apply(table: list[tuple[re.Pattern[str], str]], key: str) -> str | None:
    for pattern, template in table:
        m = pattern.fullmatch(key)
        if m:
            return template.format(n=m.group(1)) if m.groups() else template
    return None


def official_to_hf_key(key: str) -> str | None:
    """Official umT5 parameter name -> transformers ``UMT5EncoderModel`` name (None if it is not an encoder key)."""
    return _apply(_O2H, key)


def hf_to_official_key(key: str) -> str | None:
    """transformers ``UMT5EncoderModel`` parameter name -> official name (the tied
    ``encoder.embed_tokens.weight`` maps to ``token_embedding.weight``)."""
    return _apply(_H2O, _TIED_HF_KEYS.get(key, key))


# ---------------------------------------------------------------------------------------------- config
def umt5_config(
    *,
    vocab_size: int = UMT5_XXL["vocab_size"],
    d_model: int = UMT5_XXL["d_model"],
    d_kv: int = UMT5_XXL["d_kv"],
    num_heads: int = UMT5_XXL["num_heads"],
    d_ff: int = UMT5_XXL["d_ff"],
    num_layers: int = UMT5_XXL["num_layers"],
    num_buckets: int = UMT5_XXL["num_buckets"],
    max_distance: int = UMT5_XXL["max_distance"],
) -> Any:
    """A ``UMT5Config`` for the official encoder (defaults: umT5-XXL). Tiny test model: ``umt5_config(vocab_size=64,
    d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2)`` (official dim_attn = num_heads·d_kv)."""
    from transformers import UMT5Config

    return UMT5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        num_heads=num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=max_distance,
        dropout_rate=0.1,  # inactive: the encoder always runs in eval mode
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu_pytorch_tanh",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def infer_official_config(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """:func:`umt5_config` arguments read off an official-names state dict (heads from the per-layer
    relative-position table [num_buckets, num_heads]); the real file gives umT5-XXL."""
    try:
        vocab, d_model = state_dict["token_embedding.weight"].shape
        buckets, heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
        dim_attn = state_dict["blocks.0.attn.q.weight"].shape[0]
        d_ff = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"not an official umT5 encoder state dict (no {e}); pass the official .pth") from None
    layers = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")}
    return dict(vocab_size=int(vocab), d_model=int(d_model), d_kv=int(dim_attn // heads), num_heads=int(heads),
                d_ff=int(d_ff), num_layers=len(layers), num_buckets=int(buckets))


def _as_config(config: Any) -> Any:
    from transformers import UMT5Config

    if config is None:
        return umt5_config()
    if isinstance(config, UMT5Config):
        return config
    if isinstance(config, Mapping):
        return umt5_config(**config)
    raise ConfigError(
        f"config must be a UMT5Config, a dict of umt5_config() arguments or None, got {type(config).__name__}"
    )


# ---------------------------------------------------------------------------------------------- attention
# The name must not contain "flash": transformers treats such names as flash-attention kernels.
ATTN_IMPLEMENTATION = "t5_official_fp32_softmax"


def _official_t5_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official T5 attention: bias = pos_bias, masked keys set to dtype-min; softmax(q·kᵀ + bias) in float32."""
    attn = torch.matmul(query, key.transpose(2, 3))
    if scaling is not None and scaling != 1.0:
        attn = attn * scaling
    bias = attn.new_zeros(attn.shape)
    if position_bias is not None:
        bias = bias + position_bias
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attention_mask, torch.finfo(attn.dtype).min)
        else:  # additive float mask (already 0 / dtype-min)
            bias = bias + attention_mask.to(attn.dtype)
    attn = attn + bias
    weights = torch.softmax(attn.float(), dim=-1).type_as(attn)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, _official_t5_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)  # boolean mask (True = attend) or None


_register_attention()


# ---------------------------------------------------------------------------------------------- checkpoints
def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official umT5 encoder state dict (``.pth``/``.pt`` via ``torch.load(weights_only, mmap)`` or
    ``.safetensors``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"umT5 checkpoint {path} does not exist; pass the path of models_t5_umt5-xxl-enc-bf16.pth"
        )
    return read_state_dict(path)  # safetensors or torch pickle; one-line CheckpointError when unreadable


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, *, source: str = "umT5 checkpoint"
) -> dict[str, torch.Tensor]:
    """Map official names to ``model``'s names and check them strictly against ``model`` (may be on meta).

    Missing, unexpected or mis-shaped tensors raise one CheckpointError that names them (official names).
    Returns the HF-named dict including the tied ``encoder.embed_tokens.weight``.
    """
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}  # tied embedding listed once
    converted: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, tensor in state_dict.items():
        hf = official_to_hf_key(key)
        if hf is None or hf not in expected:
            unexpected.append(key)
            continue
        if tuple(tensor.shape) != expected[hf]:
            mismatched.append((key, tuple(tensor.shape), expected[hf]))
            continue
        converted[hf] = tensor
    mismatched_names = {official_to_hf_key(k) for k, _, _ in mismatched}
    missing = [hf_to_official_key(k) or k for k in expected if k not in converted and k not in mismatched_names]
    problem = format_key_problems(
        source,
        missing,
        unexpected,
        mismatched,
        hint="pass the official umT5 encoder state dict (models_t5_umt5-xxl-enc-bf16.pth) and the matching config",
    )
    if problem:
        raise CheckpointError(problem)
    for tied, src in _TIED_HF_KEYS.items():
        converted[tied] = converted[src]
    return converted


# ---------------------------------------------------------------------------------------------- encoder
class UMT5TextEncoder(TextEncoder):
    """umT5 encoder + tokenizer with the official post-processing (cut to the mask length, zero-pad to text_len).

    Construct with :meth:`from_official` (official ``.pth`` + tokenizer folder), :meth:`from_hf` (Hugging Face
    folder), :func:`~flashi2v.text.load_text_encoder` (our folder format), or directly from a ``UMT5EncoderModel``.
    """

    kind = "umt5"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        *,
        text_len: int = 512,
        clean: bool = True,
        attn_implementation: str = ATTN_IMPLEMENTATION,
    ) -> None:
        model.set_attn_implementation(attn_implementation)
        super().__init__(model, tokenizer, text_len=text_len, dim=model.config.d_model, clean=clean)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    def relative_position_bucket(self, relative_position: torch.Tensor) -> torch.Tensor:
        """transformers' bidirectional relative-position bucket (key − query) of this encoder's attention."""
        attn = self.model.encoder.block[0].layer[0].SelfAttention
        return attn._relative_position_bucket(relative_position.to(torch.long))

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under their official names (inverse key map), e.g. to write an official-format file."""
        out = {}
        for name, p in self.model.named_parameters():
            out[hf_to_official_key(name)] = p.detach()
        return out

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def build_model(config: Any = None, *, device: str | torch.device = "meta") -> nn.Module:
        """Build ``UMT5EncoderModel(config)`` (default umT5-XXL) on ``device`` (default meta: no memory)."""
        from transformers import UMT5EncoderModel

        with torch.device(device):
            model = UMT5EncoderModel(_as_config(config))
        return model

    @classmethod
    def from_official(
        cls,
        checkpoint: str | Path | Mapping[str, torch.Tensor],
        tokenizer_path: str | Path | None,
        *,
        config: Any = None,
        text_len: int = 512,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        clean: bool = True,
        attn_implementation: str = ATTN_IMPLEMENTATION,
    ) -> UMT5TextEncoder:
        """Load the official umT5 encoder state dict (``models_t5_umt5-xxl-enc-bf16.pth``, or a dict with the
        official names) through the explicit key map, strictly, plus the tokenizer folder (for Wan2.1:
        ``<Wan2.1 folder>/google/umt5-xxl``; ``None`` allows only :meth:`encode_ids`).

        ``config``: ``None`` = read off the tensor shapes (:func:`infer_official_config`; umT5-XXL for the real
        file), or a ``UMT5Config`` / dict of :func:`umt5_config` arguments.
        The model is built on the meta device and the checkpoint tensors are assigned, so no weight is ever left
        uninitialised and no extra copy is made before the dtype/device conversion.
        """
        if isinstance(checkpoint, Mapping):
            state_dict, source = dict(checkpoint), "umT5 state dict"
        else:
            state_dict, source = load_official_state_dict(checkpoint), f"umT5 checkpoint {checkpoint}"
        if config is None:
            config = infer_official_config(state_dict)
        model = cls.build_model(config, device="meta")
        converted = convert_official_state_dict(state_dict, model, source=source)
        model.load_state_dict(converted, strict=True, assign=True)
        model.encoder.embed_tokens.weight = model.shared.weight  # re-tie after assign
        leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
        if leftover:  # cannot happen with the strict check above; never run with uninitialised memory
            raise CheckpointError(f"{source} left {len(leftover)} tensors uninitialised ({leftover[:3]}); re-export it")
        model = model.to(device=device, dtype=dtype)
        tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path is not None else None
        return cls(model, tokenizer, text_len=text_len, clean=clean, attn_implementation=attn_implementation)

    @classmethod
    def from_hf(
        cls,
        folder: str | Path,
        tokenizer_path: str | Path | None = None,
        *,
        text_len: int = 512,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        clean: bool = True,
        attn_implementation: str = ATTN_IMPLEMENTATION,
    ) -> UMT5TextEncoder:
        """Load a Hugging Face format ``UMT5EncoderModel`` folder (e.g. the ``text_encoder`` folder of the Wan2.1
        diffusers release) strictly and offline. ``tokenizer_path`` defaults to ``folder`` itself.
        ``dtype=None`` keeps the stored dtype (all parameters in one dtype, including ``wo``)."""
        from transformers import UMT5EncoderModel

        model = load_hf_model_strict(
            UMT5EncoderModel,
            folder,
            model_type="umt5",
            dtype=dtype,
            ignore_unexpected=(r"decoder\.", r"lm_head\."),
        )
        if device is not None:
            model = model.to(device)
        tokenizer = load_tokenizer(tokenizer_path if tokenizer_path is not None else folder)
        return cls(model, tokenizer, text_len=text_len, clean=clean, attn_implementation=attn_implementation)

    @classmethod
    def _from_parts(cls, model_folder, tokenizer_folder, *, text_len, clean, device, dtype):
        return cls.from_hf(model_folder, tokenizer_folder, text_len=text_len, dtype=dtype, device=device, clean=clean)
