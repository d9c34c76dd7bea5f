"""Text encoders for FlashI2V: one interface (:class:`TextEncoder`), umT5-XXL (official) and MiniLM (small, real).

Quick use::

    from flashi2v.text import UMT5TextEncoder, WAN_NEGATIVE_PROMPT, load_text_encoder

    enc = UMT5TextEncoder.from_official("Wan2.1/models_t5_umt5-xxl-enc-bf16.pth", "Wan2.1/google/umt5-xxl")
    emb, lengths = enc.encode(["a cat surfing", WAN_NEGATIVE_PROMPT])   # [2, 512, 4096], [2]
    enc.save_pretrained("out/text_encoder");  enc = load_text_encoder("out/text_encoder")

See ``docs/text_encoders.md``. The encoder classes are imported lazily (umT5 pulls in transformers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flashi2v.text.base import TextEncoder, load_text_encoder, register_text_encoder
from flashi2v.text.cleaning import clean_prompt, clean_prompts

if TYPE_CHECKING:  # pragma: no cover
    from flashi2v.text.minilm import MiniLMTextEncoder
    from flashi2v.text.umt5 import UMT5TextEncoder

#: Wan's English negative prompt (official ``flashi2v/utils/constant.py``), used when no negative prompt is given.
WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy "
    "background, three legs, many people in the background, walking backwards"
)

__all__ = [
    "MiniLMTextEncoder",
    "TextEncoder",
    "UMT5TextEncoder",
    "WAN_NEGATIVE_PROMPT",
    "clean_prompt",
    "clean_prompts",
    "load_text_encoder",
    "register_text_encoder",
]

_LAZY = {
    "UMT5TextEncoder": "flashi2v.text.umt5",
    "MiniLMTextEncoder": "flashi2v.text.minilm",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flashi2v.text' has no attribute {name!r}")
