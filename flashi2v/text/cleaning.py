"""Prompt cleaning, shared by training and inference.

The official FlashI2V code cleans captions two different ways (spec §5.2 step 1, §7, §12 item 9):

* training (``TextProcessor.clean_caption``, applied twice): URL/HTML/@handle/CJK removal, many regex scrubs and
  **lower-casing**;
* inference: ``ftfy.fix_text`` + double ``html.unescape`` + whitespace collapse, **no lower-casing**.

So the model is fine-tuned on lower-cased text and sampled with cased text. We do not copy that mismatch. There is one
function, :func:`clean_prompt`, and both the data pipeline and the text encoders (inside ``encode``) call it.

Decision on lower-casing (made once, here): **we do not lower-case.** umT5 is a cased model, Wan2.1 was pre-trained on
cased prompts, and the official inference path is cased; lower-casing would throw information away. (The MiniLM
encoder uses an uncased BERT tokenizer, which lower-cases on its own; that is a property of that tokenizer, not of
the cleaning.)

The steps, in order:

1. ``ftfy.fix_text`` with its defaults, as the official code (repairs mojibake such as ``"donâ€™t"`` -> ``"don't"``,
   straightens curly quotes, normalises odd Unicode);
2. ``html.unescape`` twice (so ``"&amp;lt;"`` -> ``"<"``);
3. every run of whitespace (spaces, tabs, newlines, ...) becomes one space;
4. leading and trailing whitespace is stripped.

The function is idempotent: ``clean_prompt(clean_prompt(x)) == clean_prompt(x)`` for ordinary text.
The empty prompt stays empty (that is what text dropout and the unconditional branch use).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from flashi2v.errors import ConfigError, InputError

__all__ = ["clean_prompt", "clean_prompts"]

_WHITESPACE = re.compile(r"\s+")


def _ftfy():
    try:
        import ftfy
    except ImportError as exc:  # pragma: no cover - ftfy is installed in every supported environment
        raise ConfigError(
            "prompt cleaning needs the 'ftfy' package: install it with 'pip install ftfy' (or pass clean=False)"
        ) from exc
    return ftfy


def clean_prompt(text: str) -> str:
    """Clean one prompt: ftfy fix, double HTML unescape, whitespace collapse, strip. No lower-casing.

    Raises :class:`~flashi2v.errors.InputError` if ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InputError(f"a prompt must be a string, got {type(text).__name__}; pass text such as 'a cat running'")
    text = _ftfy().fix_text(text)
    text = html.unescape(html.unescape(text))
    text = _WHITESPACE.sub(" ", text)
    return text.strip()


def clean_prompts(texts: Sequence[str]) -> list[str]:
    """:func:`clean_prompt` applied to every element of a list of prompts."""
    return [clean_prompt(t) for t in texts]
