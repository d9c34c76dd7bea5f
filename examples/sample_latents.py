"""Build a FlashI2V DiT, save and reload it as a checkpoint, and sample latents - the README's Python example,
runnable on a CPU with a small config (pass --preset flashi2v-1.3b on a GPU for the real size)."""

import argparse
import tempfile

import torch

from flashi2v import (FlashI2VDenoiser, build_transformer, inference_sigmas, load_transformer, preset,
                      sample_euler, TransformerConfig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", help="e.g. flashi2v-1.3b (default: a small random config)")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    cfg = preset(args.preset) if args.preset else TransformerConfig(dim=128, ffn_dim=256, num_heads=2, num_layers=2,
                                                                    text_dim=64)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    torch.manual_seed(0)
    model = build_transformer(cfg)                                   # initialised as specified (φ ≡ 0 at start)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.state_dict(), f"{tmp}/flashi2v.pt")         # an official-format single file
        model, report = load_transformer(f"{tmp}/flashi2v.pt", cfg, device=device, dtype=dtype)
    print(report.summary())

    t, h, w = 3, 16, 16                                              # latent frames and size (VAE /4 time, /8 space)
    z = torch.randn(1, cfg.in_dim, 1, h, w, device=device)           # clean first-frame latent
    context = torch.randn(1, 16, cfg.text_dim, device=device)        # text states (zero-padded in real use)
    negative = torch.zeros_like(context)
    denoiser = FlashI2VDenoiser(model, z, num_latent_frames=t, cutoff_ratio=0.1)
    print(f"Fourier cutoff radius: {denoiser.condition.cutoff_radius.tolist()}")
    latents = sample_euler(denoiser, torch.randn(1, cfg.in_dim, t, h, w, device=device),
                           inference_sigmas(args.steps, shift=7.0), context, negative, guidance_scale=5.0)
    print(f"latents {tuple(latents.shape)} {latents.dtype}, std {latents.std().item():.3f}")


if __name__ == "__main__":
    main()
