"""flashi2v: image-to-video generation with FlashI2V (Fourier-guided latent shifting on a Wan2.1 DiT).

Where things are:

* :mod:`flashi2v.method`        — the FlashI2V method itself (latent shifting + Fourier guidance), one short file
* :mod:`flashi2v.models.wan`    — the Wan2.1 diffusion transformer backbone
* :mod:`flashi2v.models.flashi2v` — the two FlashI2V branches (learnable projection φ, Fourier embedding)
* :mod:`flashi2v.fourier`       — the high-frequency feature extractor
* :mod:`flashi2v.flow_matching` — sigma schedules, shifts, training times, interpolation, loss
* :mod:`flashi2v.samplers`      — the Euler sampler with classifier-free guidance
* :mod:`flashi2v.weights`       — checkpoint formats (official, diffusers, MindSpeed, our folder)
"""

from .config import PRESETS, TransformerConfig, preset
from .errors import CheckpointError, ConfigError, FlashI2VError, InputError
from .flow_matching import TimeSampler, inference_sigmas
from .fourier import high_frequency_features
from .method import FlashI2VDenoiser, image_condition, training_loss
from .models import FlashI2VTransformer, WanTransformer, build_transformer
from .precision import apply_precision
from .samplers import sample_euler
from .weights import LoadReport, load_transformer, save_transformer

__version__ = "0.1.0"

# Heavier components load on first use: `flashi2v.WanVAE`, ... (only umT5 imports transformers)
_LAZY = {
    "WanVAE": "flashi2v.vae",
    "FlashI2VPipeline": "flashi2v.pipeline",
    "GenerationDefaults": "flashi2v.pipeline",
    "TextEncoder": "flashi2v.text",
    "UMT5TextEncoder": "flashi2v.text",
    "MiniLMTextEncoder": "flashi2v.text",
    "load_text_encoder": "flashi2v.text",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flashi2v' has no attribute {name!r}")

__all__ = [
    "PRESETS", "TransformerConfig", "preset", "CheckpointError", "ConfigError", "FlashI2VError", "InputError",
    "TimeSampler", "inference_sigmas", "high_frequency_features", "FlashI2VDenoiser", "image_condition",
    "training_loss", "FlashI2VTransformer", "WanTransformer", "build_transformer", "apply_precision",
    "sample_euler", "LoadReport", "load_transformer", "save_transformer", *_LAZY,
]
