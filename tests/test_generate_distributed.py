"""`torchrun ... flashi2v generate`: context-parallel, sharded and data-parallel generation equal one process."""

import pytest
import torch

from conftest import randomize_
from dist import run_distributed

TINY = dict(dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=384, text_len=24)
ARGS = dict(prompt="a red square falls", num_frames=5, height=32, width=48, num_steps=3, guidance_scale=3.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image
    from skimage import data

    from flashi2v import FlashI2VTransformer, TransformerConfig
    from flashi2v.pipeline import FlashI2VPipeline, GenerationDefaults
    from flashi2v.text import MiniLMTextEncoder
    from flashi2v.vae import WanVAE

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("dgen")
    pipe = FlashI2VPipeline(randomize_(FlashI2VTransformer(TransformerConfig(**TINY)), seed=1), WanVAE(base_dim=8),
                            MiniLMTextEncoder.from_package(text_len=24),
                            GenerationDefaults(num_frames=5, height=32, width=48, num_steps=3, fps=8))
    pipe.save_pretrained(root / "model")
    Image.fromarray(data.chelsea()).save(root / "cat.png")
    return root


def _generate(rank, world, root, cp, shard):
    from flashi2v.parallel.inference import distribute_pipeline, init_inference
    from flashi2v.pipeline import FlashI2VPipeline

    layout = init_inference(cp, shard)
    pipe = FlashI2VPipeline.from_pretrained(root / "model", device="cpu")
    distribute_pipeline(pipe, layout)
    out = pipe(image=root / "cat.png", seed=7, progress=False, **ARGS)
    return out.latents


def _reference(root):
    from flashi2v.pipeline import FlashI2VPipeline

    return FlashI2VPipeline.from_pretrained(root / "model", device="cpu")(
        image=root / "cat.png", seed=7, progress=False, **ARGS).latents


@pytest.mark.parametrize("shard", [False, True], ids=["cp2", "cp2-sharded"])
def test_context_parallel_generation_equals_one_process(folder, shard):
    ref = _reference(folder)
    for latents in run_distributed(_generate, 2, folder, 2, shard, timeout_s=240):
        torch.testing.assert_close(latents, ref, rtol=1e-4, atol=1e-5)


def _cli(rank, world, argv):
    from flashi2v.cli import main

    return main(argv)


def _png_frames(folder):
    import numpy as np
    from PIL import Image

    return torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]))


def test_cli_data_parallel_batch_equals_one_process(folder, tmp_path, capsys):
    """--batch 3 over 2 data-parallel ranks (sharded, so rank 1 runs one padding video) = one process. Lossless PNG
    output: H.264 would amplify the float-rounding differences of batched vs single-sample sampling."""
    from flashi2v.cli import main

    argv = ["generate", "--model", str(folder / "model"), "--image", str(folder / "cat.png"), "--prompt", "a cat",
            "--batch", "3", "--quiet"]
    assert main(argv + ["--output", str(tmp_path / "one" / "v")]) == 0
    assert run_distributed(_cli, 2, argv + ["--output", str(tmp_path / "two" / "v"), "--shard"],
                           timeout_s=240) == [0, 0]
    for k in range(3):
        a, b = _png_frames(tmp_path / "one" / "v" / f"video_{k}"), _png_frames(tmp_path / "two" / "v" / f"video_{k}")
        assert a.shape == (5, 32, 48, 3) and a.shape == b.shape
        assert (a.int() - b.int()).abs().max() <= 1
    assert not (tmp_path / "two" / "v" / "video_3").exists()  # the padding video is not written
    # --cp without enough processes is a one-line user error
    assert main(argv + ["--output", str(tmp_path / "x.mp4"), "--cp", "2"]) == 2
    assert "torchrun" in capsys.readouterr().err
