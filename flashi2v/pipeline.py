"""The image-to-video pipeline: text encoder + Wan VAE + FlashI2V DiT + Euler/CFG sampler.

A model folder (``save_pretrained`` / ``from_pretrained``) holds one subfolder per component and a top-level
``model_index.json``::

    model/
      model_index.json      format tag, component subfolders, generation defaults
      transformer/          config.json + model.safetensors          (flashi2v.weights)
      vae/                  config.json + model.safetensors          (flashi2v.vae)
      text_encoder/         config.json + model/ + tokenizer/        (flashi2v.text)

With a plain Wan2.1-T2V transformer the same pipeline does text-to-video (``image=None``). Any image-to-video model
type samples through its paradigm's denoiser (:mod:`flashi2v.paradigms`): FlashI2V, and the channel-concatenation
baselines ``i2v-concat-mask`` (Wan2.1-I2V style) and ``i2v-concat-noise`` (CogVideoX-I2V style).
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import secrets
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .errors import CheckpointError, InputError
from .flow_matching import inference_sigmas
from .models import WanTransformer
from .paradigms import paradigm_for
from .precision import resolve_device, resolve_dtype
from .samplers import first_frame_anchor, sample_euler
from .text import WAN_NEGATIVE_PROMPT, TextEncoder, load_text_encoder
from .vae import WanVAE
from .weights import load_transformer, save_transformer
from .weights.io import atomic_directory, read_json_object

PIPELINE_FORMAT = "flashi2v-pipeline"
INDEX_NAME = "model_index.json"


@dataclass
class GenerationDefaults:
    """The paper's inference settings; a model folder may store its own (e.g. a tiny model's resolution)."""

    num_frames: int = 49
    height: int = 480
    width: int = 832
    num_steps: int = 50
    shift: float = 7.0
    guidance_scale: float = 5.0
    cutoff_ratio: float = 0.1  # flashi2v only
    image_noise_sigma: float = 0.0  # i2v-concat-noise only: the fixed σ_aug of the image latent at inference
    anchor_first_frame: bool = False  # pin latent frame 0 to the image while sampling (samplers.first_frame_anchor)
    fps: int = 16
    negative_prompt: str = WAN_NEGATIVE_PROMPT

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationDefaults":
        if not isinstance(d, dict):
            raise CheckpointError(f"{INDEX_NAME}: defaults must be a JSON object, got {type(d).__name__}; fix the file")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CheckpointError(f"unknown generation defaults in {INDEX_NAME}: {unknown}")
        for f in fields(cls):  # a quoted number ("20") would otherwise surface as a puzzling error at generation time
            kind = type(f.default)
            value = d.get(f.name, f.default)
            number = numbers.Real if kind is float else numbers.Integral
            ok = isinstance(value, kind) if kind in (bool, str) else (isinstance(value, number)
                                                                      and not isinstance(value, bool))
            if not ok:
                raise CheckpointError(f"{INDEX_NAME}: defaults.{f.name} must be {_KIND_NAMES[kind]}, got {value!r}; "
                                      "fix the file")
        return cls(**d)


_KIND_NAMES = {bool: "true or false", str: "a string", int: "an integer", float: "a number"}


@dataclass
class GenerationOutput:
    frames: torch.Tensor  # uint8 [B, F, H, W, 3]
    latents: torch.Tensor  # float32 [B, C, T, h, w], the final ODE state
    seeds: list[int]  # the noise seed of each sample (None entries when a generator was passed)
    fps: int
    prompts: list[str] = field(default_factory=list)


def check_num_frames(num_frames: int) -> int:
    if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % 4:
        lo = max(1, (int(num_frames) - 1) // 4 * 4 + 1) if isinstance(num_frames, int) else 49
        raise InputError(f"num_frames must be 4k+1 (1, 5, 9, ..., 49, ...), got {num_frames}; try {lo} or {lo + 4}")
    return num_frames


def _finite_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_size(height: int, width: int, multiple: int = 16) -> tuple[int, int]:
    from .media import validate_size

    return validate_size(height, width, multiple)


class FlashI2VPipeline:
    """Image (and text) to video. ``pipe(image, prompt)`` returns a :class:`GenerationOutput` of uint8 frames."""

    def __init__(
        self,
        transformer: WanTransformer,
        vae: WanVAE,
        text_encoder: TextEncoder,
        defaults: GenerationDefaults | None = None,
    ):
        if text_encoder.dim != transformer.config.text_dim:
            raise CheckpointError(
                f"text encoder gives {text_encoder.dim}-d states but the transformer expects text_dim "
                f"{transformer.config.text_dim}; use a matching text encoder"
            )
        if vae.z_dim != transformer.config.latent_channels:
            raise CheckpointError(
                f"VAE latents have {vae.z_dim} channels but the transformer works on "
                f"{transformer.config.latent_channels}-channel latents (out_dim)"
            )
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder.eval()
        self.defaults = defaults or GenerationDefaults()
        self.device = next(transformer.parameters()).device
        self._offload = False

    # ------------------------------------------------------------------------------------------- properties
    @property
    def is_i2v(self) -> bool:
        return self.transformer.config.is_i2v

    @property
    def size_multiple(self) -> int:
        """Heights and widths must be multiples of this: VAE down-sampling x DiT patch size (16 for Wan2.1)."""
        ph, pw = self.transformer.config.patch_size[1:]
        return max(16, self.vae.spatial_factor * max(ph, pw))

    @property
    def model_type(self) -> str:
        return self.transformer.config.model_type

    # ----------------------------------------------------------------------------------------- persistence
    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        offload: bool = False,
    ) -> "FlashI2VPipeline":
        """Load a model folder. ``dtype`` is the DiT compute dtype ("auto": bf16 on CUDA, fp32 on CPU); the VAE
        runs in fp32 and the text encoder keeps its stored dtype. ``offload`` parks the text encoder and the VAE on
        the CPU while the DiT runs."""
        folder = Path(folder)
        index_path = folder / INDEX_NAME
        if not folder.is_dir():
            raise CheckpointError(f"model folder not found: {folder}")
        if not index_path.is_file():
            raise CheckpointError(f"{folder} has no {INDEX_NAME}; build a model folder with `flashi2v convert`")
        index = read_json_object(index_path)
        if index.get("format") != PIPELINE_FORMAT:
            raise CheckpointError(f"{index_path} is not a flashi2v model index (format {index.get('format')!r})")
        device = resolve_device(device)
        dt = resolve_dtype(dtype, device)
        transformer, _ = load_transformer(folder / index.get("transformer", "transformer"), device=device, dtype=dt)
        vae = WanVAE.from_pretrained(folder / index.get("vae", "vae"), dtype=torch.float32, device=device)
        vae.enable_one_pass()  # small clips skip the official time chunks (same result up to float rounding)
        text_encoder = load_text_encoder(folder / index.get("text_encoder", "text_encoder"), device=device)
        pipe = cls(transformer, vae, text_encoder, GenerationDefaults.from_dict(index.get("defaults", {})))
        if offload:
            pipe.enable_offload()
        return pipe

    def save_pretrained(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model folder atomically (a failure leaves no folder with the final name)."""
        with atomic_directory(folder, overwrite=overwrite) as tmp:
            save_transformer(self.transformer, tmp / "transformer")
            self.vae.save_pretrained(tmp / "vae")
            self.text_encoder.save_pretrained(tmp / "text_encoder")
            index = {
                "format": PIPELINE_FORMAT,
                "format_version": 1,
                "model_type": self.transformer.config.model_type,
                "transformer": "transformer",
                "vae": "vae",
                "text_encoder": "text_encoder",
                "defaults": asdict(self.defaults),
            }
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return Path(folder)

    # --------------------------------------------------------------------------------------------- memory
    def enable_offload(self) -> "FlashI2VPipeline":
        """Keep the text encoder and VAE on the CPU except while they run (saves accelerator memory)."""
        self._offload = True
        self.text_encoder.enable_offload(self.device)
        self.vae.to("cpu")
        return self

    @contextlib.contextmanager
    def _vae_on_device(self):
        """With offload, the VAE visits the accelerator only for the duration of the block."""
        if self._offload:
            self.vae.to(self.device)
        try:
            yield self.vae
        finally:
            if self._offload:
                self.vae.to("cpu")

    # ------------------------------------------------------------------------------------------- building
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        emb, _ = self.text_encoder.encode(prompts)
        return emb.to(self.device)

    def encode_images(self, images: Sequence[Any], height: int, width: int) -> torch.Tensor:
        """Condition images -> clean first-frame latents [B, C, 1, H/8, W/8] (official preprocessing, fp32 VAE)."""
        from .media import preprocess_image

        pixels = torch.cat([preprocess_image(img, height, width) for img in images])  # [B, 3, H, W] in [-1, 1]
        with self._vae_on_device():
            return self.vae.encode(pixels.unsqueeze(2).to(self.vae.device)).to(self.device)

    def make_noise(
        self, shape: tuple[int, ...], seed: int | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, list[int | None]]:
        """Initial noise, float32. Sample i gets its own noise from seed + i, so any video of a batch can be
        reproduced alone (the official pipeline reuses one noise for the whole batch, spec §12.15)."""
        b = shape[0]
        if generator is not None:
            return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device), [None] * b
        if seed is None:
            seed = secrets.randbelow(2**31)
        seeds = [seed + i for i in range(b)]
        noise = torch.stack(
            [torch.randn(shape[1:], generator=torch.Generator().manual_seed(s), dtype=torch.float32) for s in seeds]
        )
        return noise.to(self.device), seeds

    def _augmentation_noise(
        self, shape: tuple[int, ...], seeds: list[int | None], generator: torch.Generator | None
    ) -> torch.Tensor:
        """ε for the image-latent noise augmentation: from ``generator`` (after the initial noise), else sample i's
        own stream seeded by seed_i + 2^32 (independent of its initial noise, reproducible alone)."""
        if generator is not None:
            return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        eps = [torch.randn(shape[1:], generator=torch.Generator().manual_seed(s + 2**32), dtype=torch.float32)
               for s in seeds]
        return torch.stack(eps).to(self.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, T, h, w] -> uint8 frames [B, F, H, W, 3] on the CPU, F = 1 + temporal_factor·(T − 1)
        (the VAE as loaded, fp32 by default)."""
        from .media import to_uint8_frames

        with self._vae_on_device():
            video = self.vae.decode(latents.to(self.vae.device))
        return to_uint8_frames(video.float().cpu())

    # ------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def __call__(
        self,
        image: Any | Sequence[Any] | None = None,
        prompt: str | Sequence[str] = "",
        negative_prompt: str | Sequence[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_steps: int | None = None,
        shift: float | None = None,
        guidance_scale: float | None = None,
        cutoff_ratio: float | None = None,
        image_noise_sigma: float | None = None,
        anchor_first_frame: bool | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        batch: int = 1,
        keep_aspect: bool = False,
        progress: bool = True,
        callback: Callable[[dict], None] | None = None,
    ) -> GenerationOutput:
        """Generate ``batch`` videos per prompt. Unset options fall back to the folder's defaults (the paper's:
        49 frames, 480x832, 50 steps, shift 7, guidance 5, cutoff ratio 0.1, Wan's negative prompt).

        ``image`` is a path, PIL image, array or tensor (or a list, one per prompt). ``negative_prompt`` is one string
        for every prompt or a list of one per prompt. ``keep_aspect`` picks a height x width (multiples of 16) near
        height*width pixels with the image's aspect ratio.
        ``cutoff_ratio`` applies to FlashI2V models, ``image_noise_sigma`` (σ_aug of the image latent, default 0) to
        ``i2v-concat-noise`` models; the augmentation noise of sample i is drawn from seed + i (or ``generator``).
        ``anchor_first_frame`` pins latent frame 0 to the image's latent during sampling
        (:func:`~flashi2v.samplers.first_frame_anchor`; image-to-video models only): the first frame is then the
        VAE's round trip of the image whatever the model makes of it. Off by default: FlashI2V's own first frame
        comes from the model.
        ``callback`` is called after every sampling step with :func:`~flashi2v.samplers.sample_euler`'s dict (``i``,
        ``sigma``, ``sigma_next``, the state ``x`` before the step, the guided ``velocity``, ``x_next``);
        ``x - sigma * velocity`` is that step's prediction of the clean latents, which :meth:`decode` turns into frames.
        """
        d = self.defaults
        num_frames = check_num_frames(d.num_frames if num_frames is None else num_frames)
        height, width = d.height if height is None else height, d.width if width is None else width
        num_steps = d.num_steps if num_steps is None else num_steps
        shift = d.shift if shift is None else shift
        guidance_scale = d.guidance_scale if guidance_scale is None else guidance_scale
        cutoff_ratio = d.cutoff_ratio if cutoff_ratio is None else cutoff_ratio
        image_noise_sigma = d.image_noise_sigma if image_noise_sigma is None else image_noise_sigma
        anchor_first_frame = d.anchor_first_frame if anchor_first_frame is None else bool(anchor_first_frame)
        negative_prompt = d.negative_prompt if negative_prompt is None else negative_prompt
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise InputError(f"num_steps must be a positive integer, got {num_steps!r}")
        if not (_finite_number(shift) and shift > 0):
            raise InputError(f"shift must be a finite number > 0, got {shift!r}")
        if not _finite_number(guidance_scale):
            raise InputError(f"guidance_scale must be a finite number (1 turns guidance off), got {guidance_scale!r}")
        if not 0.0 <= cutoff_ratio <= 1.0:
            raise InputError(f"cutoff_ratio must be in [0, 1], got {cutoff_ratio}")
        if not image_noise_sigma >= 0.0:
            raise InputError(f"image_noise_sigma must be >= 0, got {image_noise_sigma}")
        if not isinstance(batch, int) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch}")

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise InputError("no prompt given")
        images: list[Any] | None = None
        if self.is_i2v:
            if image is None:
                raise InputError("this is an image-to-video model: pass an image (--image)")
            images = list(image) if isinstance(image, (list, tuple)) else [image] * len(prompts)
            if len(images) != len(prompts):
                raise InputError(f"got {len(images)} images for {len(prompts)} prompts; pass one image per prompt")
        elif image is not None:
            raise InputError("this is a text-to-video model (Wan2.1-T2V): it takes no image")
        elif anchor_first_frame:
            raise InputError("anchor_first_frame needs an image-to-video model: this is text-to-video (Wan2.1-T2V)")

        if keep_aspect and images is not None:
            from .media import fit_resolution, load_image

            ih, iw = load_image(images[0]).shape[-2:]
            height, width = fit_resolution(ih, iw, target_area=height * width, multiple=self.size_multiple)
        height, width = check_size(height, width, self.size_multiple)

        if isinstance(negative_prompt, str):
            negatives = [negative_prompt] * len(prompts)
        else:
            negatives = list(negative_prompt)
            if len(negatives) != len(prompts) or not all(isinstance(n, str) for n in negatives):
                raise InputError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts; pass one string "
                                 "for all or one per prompt")
        prompts = [p for p in prompts for _ in range(batch)]
        negatives = [n for n in negatives for _ in range(batch)]
        if images is not None:
            images = [im for im in images for _ in range(batch)]
        b = len(prompts)
        sf, tf = self.vae.spatial_factor, self.vae.temporal_factor
        if (num_frames - 1) % tf:
            raise InputError(f"num_frames must be 1 + {tf}k for this VAE, got {num_frames}")
        t_lat = (num_frames - 1) // tf + 1
        max_lat = self.transformer.config.frame_embedding
        if max_lat and t_lat > max_lat:
            raise InputError(
                f"this model's frame embedding covers {max_lat} latent frames, i.e. at most {(max_lat - 1) * tf + 1} "
                f"frames; got num_frames {num_frames}"
            )
        shape = (b, self.transformer.config.latent_channels, t_lat, height // sf, width // sf)

        use_cfg = guidance_scale > 1.0
        context = self.encode_prompts(prompts + (negatives if use_cfg else []))
        context, negative = (context[:b], context[b:]) if use_cfg else (context, None)
        z = self.encode_images(images, height, width) if images is not None else None
        noise, seeds = self.make_noise(shape, seed, generator)
        paradigm = paradigm_for(self.transformer.config)
        if z is not None:
            opts: dict[str, Any] = {}
            if self.model_type == "flashi2v":
                opts = dict(cutoff_ratio=cutoff_ratio)
            elif self.model_type == "i2v-concat-noise":
                opts = dict(aug_sigma=image_noise_sigma)
                if image_noise_sigma > 0:
                    opts["aug_noise"] = self._augmentation_noise(tuple(z.shape), seeds, generator)
            model = paradigm.denoiser(self.transformer, z, t_lat, **opts)
        else:
            model = paradigm.denoiser(self.transformer, None, t_lat)
        sigmas = inference_sigmas(num_steps, shift, device=self.device)
        constraint = first_frame_anchor(z, noise) if anchor_first_frame else None
        latents = sample_euler(model, noise, sigmas, context, negative, guidance_scale, progress=progress,
                               constraint=constraint, callback=callback)
        frames = self.decode(latents)
        if frames.shape[1] != num_frames:  # the VAE maps 1 + 4k latents... to exactly num_frames frames
            raise RuntimeError(f"decoded {frames.shape[1]} frames, expected {num_frames}")
        return GenerationOutput(frames=frames, latents=latents.cpu(), seeds=seeds, fps=d.fps, prompts=prompts)
