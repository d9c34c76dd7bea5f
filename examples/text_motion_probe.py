"""Can a FlashI2V DiT learn to move the camera the way the prompt says?  A synthetic probe, no VAE, CPU minutes.

Each clip is a window (16 x 16 latent pixels, 9 latent frames, 16 channels) moving over a larger random smooth
latent canvas: one of 8 pan directions (4-8 latent px over the clip, 25-50 % of the frame) or still. ``--size``
changes the window (the canvas, 2.5x, and the pan, 25-50 %, scale with it); ``--canvas-cache CACHE`` takes the
canvases from a latent cache's first-frame latents instead (real VAE latents of real images, panned exactly; they
must be at least twice the window); ``--canvas-bank N`` draws them from a fixed bank of N random canvases instead of a
new one per clip; ``--whiten`` flattens the canvases' mean power spectrum per channel (needs a cache or a bank). The
prompt is

* ``--captions short``: "The camera pans left over the scene." (3 phrasings per direction), or
* ``--captions world``: a real caption of the procedural world (flashi2v.world) whose camera pans or holds still;
  only the camera motion is rendered, the objects, their motions and the lighting the caption also describes are
  distractors (the caption names up to 3 more directions).

A FlashI2V DiT (φ fixed at the identity, as the default model; ``--dim``, ``--patch``, 4 layers) is trained from
scratch with the package's loss and time sampler (AdamW, lr 2e-3, batch 8), then samples 36 held-out clips (20 Euler
steps, shift 3, guidance 3 against the empty prompt). The camera motion of a sample is the integer shift that best maps
its first latent frame onto its last; the direction is right within ±22.5° (a still prompt: |shift| <= 1.5). Prints
one JSON line. Always answering "still" scores 0.11 with ``short`` prompts and about 0.43 with ``world`` ones (3 in 7
of those cameras are still).

Two text paths meant to keep direction words apart (docs/default_model.md, "The world's captions on the probe"):
``--hidden-layer 0,5`` concatenates several MiniLM layers' states per token (0 = the token embeddings, so the DiT can
key on the context and read the word itself; the DiT's text_dim becomes 384 x the number of layers), and
``--clauses`` encodes each clause of a prompt on its own (split after . ; : ! ? and before ", while") and concatenates
their token states, so a direction word's state carries only its own clause's context.

``--mix-short 0.5`` (with ``world``) prompts half the training batches with the short captions instead; evaluation
stays on the world's captions. ``--batch`` sets the clips per step (8), ``--eval-at 1500,3000`` samples the held-out
clips at those steps too (one JSON line each), ``--paradigm i2v-concat-mask`` conditions on the first frame by
channel concatenation instead (the leakage benchmark's Wan-style baseline), ``--condition-init zero`` trains φ from
the paper's zero init, and ``--device cuda`` trains and samples on a GPU (the clips are still drawn on the CPU, so a
run draws the same clips and noise on either device).

    python examples/text_motion_probe.py --captions world --hidden-layer 5 --steps 1500   # ~25 min on 2 CPU cores

Results are in docs/default_model.md ("A synthetic probe: the prompt's complexity, not the motion").
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time

import torch
import torch.nn.functional as F

from flashi2v.config import TransformerConfig
from flashi2v.flow_matching import TimeSampler, inference_sigmas
from flashi2v.models.flashi2v import build_transformer
from flashi2v.paradigms import paradigm_for
from flashi2v.samplers import sample_euler
from flashi2v.text.minilm import MiniLMTextEncoder

T, C = 9, 16
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
              "up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1), "down-right": (1, 1)}
NAMES = list(DIRECTIONS) + ["still"]
SHORT = ["The camera pans {d} over the scene.", "A view that moves {d}.", "Seen by a camera panning {d}."]
SHORT_STILL = ["The camera is still over the scene.", "A static view.", "Seen by a still camera."]


CLAUSE_BREAK = re.compile(r"(?<=[.;:!?])\s+|,\s+(?=while\b)")


class PromptEncoder:
    """MiniLM token states of prompts: the concatenation of ``layers``' states per token, each clause of a prompt
    encoded on its own when ``clauses`` (their states concatenated, then truncated or zero-padded to ``text_len``)."""

    def __init__(self, layers: list[int], clauses: bool, text_len: int):
        self.layers, self.clauses, self.text_len = layers, clauses, text_len
        self.minilm = MiniLMTextEncoder.from_package(text_len=text_len, hidden_layer=layers[0])
        self.dim = 384 * len(layers)

    def _layers(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        states = []
        for layer in self.layers:
            self.minilm.hidden_layer = layer
            out, lengths = self.minilm.encode(texts)
            states.append(out)
        return torch.cat(states, -1), lengths

    def encode(self, texts: list[str]) -> torch.Tensor:
        if not self.clauses:
            return self._layers(texts)[0]
        rows = torch.zeros(len(texts), self.text_len, self.dim)
        for i, text in enumerate(texts):
            parts = [p for p in CLAUSE_BREAK.split(text) if p.strip()] or [text]
            states, lengths = self._layers(parts)
            tokens = torch.cat([s[:n] for s, n in zip(states, lengths.tolist())])[:self.text_len]
            rows[i, :len(tokens)] = tokens
        return rows


def prompt_bank(encoder: PromptEncoder, captions: str, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(text states [n, L, encoder.dim], direction labels [n]) of prompts for ``split``."""
    texts, labels = [], []
    if captions == "short":
        for k in range(n):
            label = k % len(NAMES)
            name = NAMES[label]
            phrasings = SHORT_STILL if name == "still" else [p.format(d=name) for p in SHORT]
            texts.append(phrasings[(k // len(NAMES)) % 3])
            labels.append(label)
    else:
        from flashi2v.world import sample_scene

        seed = 0
        while len(texts) < n:
            scene = sample_scene(seed, split)
            seed += 1
            motion = scene["camera"]["motion"]
            if motion not in ("static", "pan"):
                continue
            texts.append(scene["caption"])
            labels.append(NAMES.index("still" if motion == "static" else scene["camera"]["direction"].replace("_", "-")))
    states = torch.cat([encoder.encode(texts[i:i + 64]) for i in range(0, n, 64)])
    return states, torch.tensor(labels)


def make_clips(bank, b: int, g: torch.Generator, size: int = 16, canvases: torch.Tensor | None = None):
    """Clean latents [b, C, T, size, size], prompts [b, L, 384] and direction labels [b] for ``b`` random clips.
    ``canvases`` [N, C, S, S] (S >= 2 * size): draw each clip's canvas from these instead of random smooth noise."""
    states, labels = bank
    pick = torch.randint(0, len(labels), (b,), generator=g)
    if canvases is None:
        extent = int(size * 2.5)
        canvas = noise_canvases(b, extent, g)
    else:
        extent = canvases.shape[-1]
        canvas = canvases[torch.randint(0, len(canvases), (b,), generator=g)]
    distance = size / 4 * (1 + torch.rand(b, generator=g))
    clips = torch.empty(b, C, T, size, size)
    ramp = torch.arange(size, dtype=torch.float32) + (extent - size) / 2
    for i in range(b):
        vx, vy = DIRECTIONS.get(NAMES[labels[pick[i]]], (0, 0))
        norm = math.hypot(vx, vy) or 1.0
        for t in range(T):
            s = distance[i] * t / (T - 1) / norm
            gy, gx = torch.meshgrid(ramp + s * vy, ramp + s * vx, indexing="ij")
            grid = torch.stack([gx, gy], -1)[None] / (extent - 1) * 2 - 1
            clips[i, :, t] = F.grid_sample(canvas[i:i + 1], grid, align_corners=True)[0]
    return clips, states[pick].clone(), labels[pick]


def noise_canvases(n: int, extent: int, g: torch.Generator) -> torch.Tensor:
    """``n`` random smooth canvases [n, C, extent, extent]: Gaussian noise at a quarter of the size, bicubic upsampled."""
    return F.interpolate(torch.randn(n, C, extent // 4, extent // 4, generator=g), size=(extent, extent),
                         mode="bicubic") * 1.5


def whiten(canvases: torch.Tensor) -> torch.Tensor:
    """Divide every 2-D frequency of each channel by its RMS amplitude over the canvases (a flat mean power spectrum,
    DC included), then standardise each channel: the canvases' texture at every scale weighs the same."""
    f = torch.fft.fft2(canvases.double())
    flat = torch.fft.ifft2(f / f.abs().pow(2).mean(0, keepdim=True).sqrt().clamp_min(1e-12)).real
    flat = (flat - flat.mean((0, 2, 3), keepdim=True)) / flat.std((0, 2, 3), keepdim=True)
    return flat.float()


def load_canvases(cache: str, size: int) -> torch.Tensor:
    """The first-frame latents [N, C, S, S] of a latent cache (centre-cropped square), as pan canvases."""
    from flashi2v.data.latent_cache import LatentCacheDataset
    from flashi2v.errors import InputError

    try:
        ds = LatentCacheDataset(cache, pad_text=False)
    except InputError as e:
        raise SystemExit(f"--canvas-cache: {e}") from None
    z = torch.stack([ds[i]["first_frame_latents"][:, 0] for i in range(len(ds))]).float()
    h, w = z.shape[-2:]
    s = min(h, w)
    if z.shape[1] != C or s < 2 * size:
        raise SystemExit(f"--canvas-cache needs {C}-channel latents at least {2 * size} px a side (twice --size), "
                         f"got {tuple(z.shape[1:])}")
    return z[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].contiguous()


def camera_shift(video: torch.Tensor) -> tuple[int, int]:
    """The integer (dx, dy) camera move that best maps latent frame 0 of ``video`` [C, T, H, W] onto its last frame."""
    first, last = video[:, 0], video[:, -1]
    size = video.shape[-1]
    best, arg = float("inf"), (0, 0)
    for dy in range(-(size // 2), size // 2 + 1):
        for dx in range(-(size // 2), size // 2 + 1):
            y0, y1, x0, x1 = max(0, dy), min(size, size + dy), max(0, dx), min(size, size + dx)
            err = (last[:, y0 - dy:y1 - dy, x0 - dx:x1 - dx] - first[:, y0:y1, x0:x1]).pow(2).mean().item()
            if err < best:
                best, arg = err, (dx, dy)
    return arg


def direction_right(shift: tuple[int, int], label: int) -> bool:
    name = NAMES[label]
    if name == "still":
        return math.hypot(*shift) <= 1.5
    if math.hypot(*shift) < 1.5:
        return False
    vx, vy = DIRECTIONS[name]
    angle = math.degrees(math.atan2(shift[1], shift[0]) - math.atan2(vy, vx))
    return abs((angle + 180) % 360 - 180) <= 22.5


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--captions", choices=["short", "world"], default="short")
    ap.add_argument("--hidden-layer", default="-1",
                    help="MiniLM layer whose states are the prompt (-1: last; 0: token embeddings); a comma list such "
                         "as 0,5 concatenates those layers' states")
    ap.add_argument("--clauses", action="store_true", help="encode each clause of a prompt on its own")
    ap.add_argument("--frame-embedding", action="store_true", help="TransformerConfig.frame_embedding = 9")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--pool", type=int, default=0, help="train on this many fixed clips (0: a new clip every time)")
    ap.add_argument("--mix-short", type=float, default=0.0,
                    help="with --captions world: the share of training batches prompted with short camera-only "
                         "captions instead (evaluation stays on world captions)")
    ap.add_argument("--bank", type=int, default=1500, help="training prompts in the bank")
    ap.add_argument("--text-len", type=int, default=0,
                    help="text slots the prompt is zero-padded to (0: 96 for world captions, 24 for short ones)")
    ap.add_argument("--eval-clips", type=int, default=36)
    ap.add_argument("--size", type=int, default=16, help="latent window (pixels a side)")
    ap.add_argument("--patch", type=int, default=2, help="the DiT's spatial patch size")
    ap.add_argument("--dim", type=int, default=128, help="the DiT's width (ffn 4x)")
    ap.add_argument("--canvas-cache", default=None,
                    help="a latent cache (flashi2v data encode): pan over its first-frame latents, not random noise")
    ap.add_argument("--canvas-bank", type=int, default=0,
                    help="pan over a fixed bank of this many random canvases (0: a new canvas for every clip)")
    ap.add_argument("--whiten", action="store_true",
                    help="flatten the canvases' mean power spectrum per channel (with --canvas-cache or --canvas-bank)")
    ap.add_argument("--batch", type=int, default=8, help="clips per training step")
    ap.add_argument("--eval-at", default="",
                    help="comma-separated steps at which to sample the held-out clips (default: after the last step)")
    ap.add_argument("--paradigm", choices=["flashi2v", "i2v-concat-mask"], default="flashi2v",
                    help="how the first frame conditions the DiT (i2v-concat-mask: Wan-style channel concatenation)")
    ap.add_argument("--condition-init", choices=["identity", "zero"], default="identity",
                    help="flashi2v's φ: fixed at the identity (the default model's), or zero-initialised and trained "
                         "(the paper's)")
    ap.add_argument("--device", default="cpu", help="train and sample here (clips are drawn on the CPU)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # a caller's setting (e.g. the test process) is left as it was


def run(args) -> dict:
    if not 0 <= args.text_len <= MiniLMTextEncoder.max_text_len:
        raise SystemExit(f"--text-len must be in [1, {MiniLMTextEncoder.max_text_len}] (0: the default), got {args.text_len}")
    if args.mix_short and (args.captions != "world" or args.pool or not 0 < args.mix_short <= 1):
        raise SystemExit("--mix-short needs --captions world, no --pool, and a share in (0, 1]")
    if args.size < 2 or args.patch < 1 or args.size % args.patch or args.dim < 4 or args.dim % 4:
        raise SystemExit(f"--size ({args.size}) must be a multiple of --patch ({args.patch}), and --dim ({args.dim}) a "
                         "multiple of the 4 heads")
    if args.canvas_bank and args.canvas_cache:
        raise SystemExit("give --canvas-cache or --canvas-bank, not both")
    if args.canvas_bank < 0 or (args.whiten and not (args.canvas_cache or args.canvas_bank)):
        raise SystemExit("--canvas-bank must be positive, and --whiten needs --canvas-cache or --canvas-bank")
    if args.batch < 1:
        raise SystemExit(f"--batch must be at least 1, got {args.batch}")
    try:
        layers = [int(v) for v in str(args.hidden_layer).split(",")]
    except ValueError:
        raise SystemExit(f"--hidden-layer takes a MiniLM layer or a comma list of them, got {args.hidden_layer!r}") \
            from None
    if not all(-7 <= v <= 6 for v in layers) or len(set(v % 7 for v in layers)) < len(layers):
        raise SystemExit(f"--hidden-layer: layers must be distinct, from -7 to 6 (0 = embeddings, -1 = last), got "
                         f"{args.hidden_layer!r}")
    try:
        eval_at = sorted({int(v) for v in args.eval_at.split(",") if v.strip()}) or [args.steps]
    except ValueError:
        raise SystemExit(f"--eval-at takes comma-separated step numbers, got {args.eval_at!r}") from None
    if eval_at[0] < 0 or eval_at[-1] > args.steps:
        raise SystemExit(f"--eval-at steps must lie in [0, --steps = {args.steps}], got {args.eval_at!r}")
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise SystemExit(f"--device {args.device}: {str(e).splitlines()[0]}") from None
    canvases = load_canvases(args.canvas_cache, args.size) if args.canvas_cache else None
    if args.canvas_bank:
        canvases = noise_canvases(args.canvas_bank, int(args.size * 2.5), torch.Generator().manual_seed(7))
    if args.whiten:
        canvases = whiten(canvases)
    text_len = args.text_len or (96 if args.captions == "world" else 24)
    encoder = PromptEncoder(layers, args.clauses, text_len)
    empty = encoder.encode([""])
    train_bank = prompt_bank(encoder, args.captions, "train", args.bank)
    short_bank = prompt_bank(encoder, "short", "train", 270) if args.mix_short else None
    test_bank = prompt_bank(encoder, args.captions, "test", max(args.eval_clips, 9))

    cfg = TransformerConfig(model_type=args.paradigm, dim=args.dim, ffn_dim=4 * args.dim, num_heads=4, num_layers=4,
                            text_dim=encoder.dim, text_len=text_len, patch_size=(1, args.patch, args.patch),
                            frame_embedding=T if args.frame_embedding else 0)
    torch.manual_seed(0)
    model = build_transformer(cfg)
    paradigm = paradigm_for(cfg)
    if args.paradigm == "flashi2v" and args.condition_init == "identity":
        model.init_condition_branches_identity()
        model.learnable_proj.requires_grad_(False)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    sampler = TimeSampler()

    g = torch.Generator().manual_seed(1)
    clips = dict(size=args.size, canvases=canvases)
    pool = make_clips(train_bank, args.pool, g, **clips) if args.pool else None
    ge = torch.Generator().manual_seed(123)
    test_x0, test_ctx, test_labels = make_clips(test_bank, args.eval_clips, ge, **clips)
    test_noise = torch.randn(test_x0.shape, generator=ge)
    truth = sum(direction_right(camera_shift(v), int(lab)) for v, lab in zip(test_x0, test_labels)) / len(test_labels)

    def evaluate(step: int) -> dict:
        """Sample the held-out clips (20 Euler steps, shift 3, guidance 3) and score their camera moves."""
        model.eval()
        with torch.no_grad():
            first = test_x0[:, :, :1].to(device)
            y = sample_euler(paradigm.denoiser(model, first, T), test_noise.to(device), inference_sigmas(20, 3.0),
                             test_ctx.to(device), empty.expand(len(test_labels), -1, -1).to(device),
                             guidance_scale=3.0, progress=False).cpu()
        model.train()
        shifts = [camera_shift(v) for v in y]
        right = [direction_right(s, int(lab)) for s, lab in zip(shifts, test_labels)]
        pans = [r for r, lab in zip(right, test_labels) if NAMES[int(lab)] != "still"]
        return dict(step=step, direction_right=sum(right) / len(right), pans_right=f"{sum(pans)}/{len(pans)}",
                    mean_shift_px=sum(math.hypot(*s) for s in shifts) / len(shifts))

    evals = [evaluate(0)] if eval_at[0] == 0 else []
    losses, t0 = [], time.time()
    b = args.batch
    for step in range(1, args.steps + 1):
        if pool is not None:
            idx = torch.randint(0, args.pool, (b,), generator=g)
            x0, ctx = pool[0][idx], pool[1][idx].clone()
        elif short_bank is not None and torch.rand((), generator=g).item() < args.mix_short:
            x0, ctx, _ = make_clips(short_bank, b, g, **clips)
        else:
            x0, ctx, _ = make_clips(train_bank, b, g, **clips)
        ctx[torch.rand(b, generator=g) < 0.1] = empty  # text dropout, for guidance
        x0, ctx = x0.to(device), ctx.to(device)
        loss = paradigm.training_loss(model, x0, x0[:, :, :1], ctx, time_sampler=sampler, generator=g).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step in eval_at:
            evals.append(evaluate(step))
            if len(eval_at) > 1:
                print(json.dumps(dict(evals[-1], loss_last_100=sum(losses[-100:]) / len(losses[-100:]))), flush=True)
    train_s = time.time() - t0

    tail = losses[-100:] or [float("nan")]
    result = dict(
        captions=args.captions, text_len=text_len, hidden_layer=layers[0] if len(layers) == 1 else layers,
        clauses=args.clauses, frame_embedding=args.frame_embedding,
        steps=args.steps, pool=args.pool, mix_short=args.mix_short, size=args.size, patch=args.patch, dim=args.dim,
        canvas="cache" if args.canvas_cache else f"bank {args.canvas_bank}" if args.canvas_bank else "noise",
        whiten=args.whiten, batch=b, paradigm=args.paradigm, condition_init=args.condition_init,
        **{k: v for k, v in evals[-1].items() if k != "step"}, evals=evals,
        truth_direction_right=truth, loss_last_100=sum(tail) / len(tail), train_s_per_step=train_s / max(args.steps, 1),
    )
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
