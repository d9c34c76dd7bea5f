"""End to end on real files: world clips -> filter -> LMDB -> (latent cache | on-the-fly videos) -> train -> export
-> generate, with sample videos logged during training."""

import io
import math

import pytest
import torch

TINY = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=384, text_len=16, freq_dim=32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from flashi2v.data.filter import FilterConfig, run_filter
    from flashi2v.pipeline import FlashI2VPipeline, GenerationDefaults
    from flashi2v.text import MiniLMTextEncoder
    from flashi2v.vae import WanVAE
    from flashi2v.world import write_dataset
    from flashi2v import FlashI2VTransformer, TransformerConfig

    root = tmp_path_factory.mktemp("e2e")
    ds = write_dataset(root / "world", "train", num_clips=4, seed=0, num_frames=5, height=32, width=32, fps=8)
    fcfg = FilterConfig.from_yaml(ds.filter_config_path)
    fcfg.save_path = str(root / "lmdb")
    lmdb = run_filter(fcfg, out=io.StringIO()).output_path
    torch.manual_seed(0)
    FlashI2VPipeline(FlashI2VTransformer(TransformerConfig(**TINY)), WanVAE(base_dim=8),
                     MiniLMTextEncoder.from_package(text_len=16),
                     GenerationDefaults(num_frames=5, height=32, width=32, num_steps=2, fps=8)).save_pretrained(root / "base")
    return root, lmdb, ds


def _cfg(root, name, **data):
    from flashi2v.train.config import TrainConfig

    return TrainConfig.from_dict(dict(
        output_dir=str(root / name), seed=0, max_steps=2,
        model=dict(architecture=dict(TINY), pipeline=str(root / "base")),
        data=dict(height=32, width=32, num_frames=5, train_fps=8, batch_size=2, **data),
        optim=dict(lr=1e-3), checkpoint=dict(every=2), log=dict(every=1, tensorboard=True, sample_every=2,
                                                                 sample_steps=2,
                                                                 validation=[dict(image=str(root / "frame.png"),
                                                                                  prompt="a red square")]),
    ))


def test_world_to_cache_to_training_to_generation(world, capsys):
    from PIL import Image

    from flashi2v.data.latent_cache import encode_cache
    from flashi2v.pipeline import FlashI2VPipeline
    from flashi2v.train.export import export
    from flashi2v.train.trainer import Trainer

    root, lmdb, ds = world
    from flashi2v.media.video import read_video

    first = read_video(root / "world" / "videos" / "000000.mp4")[0][0]
    Image.fromarray(first.numpy()).save(root / "frame.png")
    encode_cache(lmdb, root / "base", root / "cache", height=32, width=32, num_frames=5, train_fps=8, shard_size=2,
                 device="cpu")
    t = Trainer(_cfg(root, "run-cache", source="latent_cache", path=str(root / "cache")))
    hist = t.fit()
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)
    assert list((root / "run-cache" / "samples" / "step_000000002").glob("video_0.mp4"))
    assert list((root / "run-cache" / "tensorboard").glob("events.*"))
    folder = export(root / "run-cache", root / "exported")  # EMA weights + the base's VAE and text encoder
    video = FlashI2VPipeline.from_pretrained(folder, device="cpu")(image=root / "frame.png", prompt="a red square",
                                                                    progress=False, seed=1)
    assert video.frames.shape == (1, 5, 32, 32, 3)


def test_training_on_decoded_videos(world):
    from flashi2v.train.trainer import Trainer

    root, lmdb, _ = world
    cfg = _cfg(root, "run-videos", source="videos", path=str(lmdb), num_workers=1)
    cfg.log.sample_every = 0
    hist = Trainer(cfg).fit()
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)


def test_max_samples_trains_on_the_first_samples_of_a_cache(world):
    from flashi2v.data.latent_cache import encode_cache
    from flashi2v.errors import InputError
    from flashi2v.train.trainer import Trainer

    root, lmdb, _ = world
    encode_cache(lmdb, root / "base", root / "cache-subset", height=32, width=32, num_frames=5, train_fps=8,
                 shard_size=3, device="cpu")  # 4 samples in shards of 3 and 1
    cfg = _cfg(root, "run-subset", source="latent_cache", path=str(root / "cache-subset"), max_samples=2)
    cfg.log.sample_every = 0
    t = Trainer(cfg)
    assert t.source.num_samples == 2 and t.sampler.n == 2
    drawn = {i for _ in range(6) for i in t.sampler.next_indices()}
    assert drawn == {0, 1}  # the same permutations as a 2-sample cache
    t.sampler.epoch, t.sampler.cursor = 0, 0
    full = Trainer(_cfg(root, "run-all", source="latent_cache", path=str(root / "cache-subset")))
    assert full.source.num_samples == 4
    first_two = [full.source.ds[i]["caption"] for i in range(2)]
    assert [t.source.ds[i]["caption"] for i in range(2)] == first_two
    hist = t.fit()
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)
    with pytest.raises(InputError, match="data.max_samples is 5 but .* holds 4 samples"):
        Trainer(_cfg(root, "run-too-many", source="latent_cache", path=str(root / "cache-subset"), max_samples=5))
