"""Weight formats: official single files, T2V -> FlashI2V init, MindSpeed names, our model folder; strict errors."""

import json

import pytest
import torch

from conftest import randomize_, small_config
from flashi2v import CheckpointError, FlashI2VTransformer, WanTransformer, load_transformer, save_transformer
from flashi2v.method import FlashI2VDenoiser
from flashi2v.precision import apply_precision
from flashi2v.weights import infer_config
from flashi2v.weights.mindspeed import is_mindspeed, official_to_mindspeed

X = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(0))
Z = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
CTX = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(2))
T = torch.tensor([321.0])


def _out(model):
    with torch.no_grad():
        if isinstance(model, FlashI2VTransformer):
            return FlashI2VDenoiser(model, Z, 2)(X, T, CTX)
        return model(X, T, CTX)


def _save(sd, path):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("model_type", ["flashi2v", "t2v"])
def test_official_single_file(tmp_path, suffix, model_type):
    cfg = small_config(model_type=model_type, num_heads=2, dim=256, ffn_dim=64, num_layers=1)  # head dim 128
    ref = randomize_(FlashI2VTransformer(cfg) if model_type == "flashi2v" else WanTransformer(cfg)).eval()
    path = tmp_path / f"ckpt{suffix}"
    _save(ref.state_dict(), path)
    model, report = load_transformer(path)  # architecture inferred from the shapes (heads = dim / 128)
    assert model.config == cfg.replace(text_len=512)
    assert report.format == "official" and len(report.loaded) == len(ref.state_dict()) and not report.initialized
    assert not model.training
    assert torch.equal(_out(model), _out(ref))
    # an explicit config (heads not inferable) works too
    model2, _ = load_transformer(path, cfg)
    assert torch.equal(_out(model2), _out(ref))


def test_wrapper_prefix_and_container_are_unwrapped(tmp_path):
    ref = randomize_(FlashI2VTransformer(small_config())).eval()
    sd = {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}
    torch.save(sd, tmp_path / "wrapped.pt")
    model, _ = load_transformer(tmp_path / "wrapped.pt", small_config())
    assert torch.equal(_out(model), _out(ref))


def test_flashi2v_from_t2v_checkpoint_reports_filled_and_initialised(tmp_path):
    cfg = small_config(model_type="t2v")
    t2v = randomize_(WanTransformer(cfg)).eval()
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    _save(t2v.state_dict(), path)
    with pytest.raises(CheckpointError, match="from_t2v=True"):  # official bug §12.1: never silently ignore the image
        load_transformer(path, cfg.replace(model_type="flashi2v"))
    model, report = load_transformer(path, cfg.replace(model_type="flashi2v"), from_t2v=True)
    assert isinstance(model, FlashI2VTransformer)
    assert sorted(report.loaded) == sorted(t2v.state_dict())
    assert sorted(report.initialized) == sorted(k for k in model.state_dict() if k.startswith(("fourier_", "learnable_")))
    assert "initialised 8 tensors (fourier_embedding, learnable_proj)" in report.summary()
    assert torch.equal(model.learnable_proj.proj[2].weight, torch.zeros_like(model.learnable_proj.proj[2].weight))
    assert model.learnable_proj.proj[0].weight.abs().sum() > 0  # xavier, not garbage or zeros
    assert torch.equal(_out(model), _out(t2v))  # exactly the T2V model at step 0
    # inferred config path: a T2V checkpoint + from_t2v gives a FlashI2V model of the same dims
    model3, _ = load_transformer(path, from_t2v=True, num_heads=4)
    assert model3.config.is_flashi2v and model3.config.dim == 64


def test_partial_branch_is_an_error(tmp_path):
    ref = randomize_(FlashI2VTransformer(small_config()))
    sd = {k: v for k, v in ref.state_dict().items() if k != "learnable_proj.proj.2.bias"}
    with pytest.raises(CheckpointError, match="1 missing: learnable_proj.proj.2.bias"):
        load_transformer(sd, small_config())
    with pytest.raises(CheckpointError, match="only part of the learnable_proj"):
        load_transformer(sd, small_config(), from_t2v=True)


def test_mindspeed_names_are_renamed_automatically(tmp_path):
    cfg = small_config(conv3x3x3_proj=True, num_heads=2, dim=256, ffn_dim=64, num_layers=2)
    ref = randomize_(FlashI2VTransformer(cfg)).eval()
    ms = official_to_mindspeed(ref.state_dict())
    assert is_mindspeed(ms) and not is_mindspeed(ref.state_dict())
    assert "blocks.1.self_attn.proj_q.weight" in ms and "blocks.0.cross_attn.proj_out.bias" in ms
    assert "blocks.0.self_attn.q_norm.weight" in ms and "text_embedding.linear_2.weight" in ms
    assert "learnable_proj.0.weight" in ms
    _save(ms, tmp_path / "flashi2v_1_3B.pt")
    model, report = load_transformer(tmp_path / "flashi2v_1_3B.pt")
    assert report.format == "mindspeed" and report.renamed > 0
    assert model.config.conv3x3x3_proj  # 3x3x3 inferred from the kernel shape
    assert torch.equal(_out(model), _out(ref))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_folder_round_trip_is_lossless(tmp_path, dtype):
    ref = apply_precision(randomize_(FlashI2VTransformer(small_config(conv3x3x3_proj=True))), dtype).eval()
    save_transformer(ref, tmp_path / "transformer")
    cfg = json.loads((tmp_path / "transformer" / "config.json").read_text())
    assert cfg["format"] == "flashi2v-transformer" and cfg["conv3x3x3_proj"] is True and cfg["num_heads"] == 4
    model, report = load_transformer(tmp_path / "transformer", dtype=dtype)
    assert report.format == "folder" and model.config == ref.config
    for (n, a), (_, b) in zip(ref.state_dict().items(), model.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), n
    with pytest.raises(CheckpointError, match="already exists"):
        save_transformer(ref, tmp_path / "transformer")
    save_transformer(ref, tmp_path / "transformer", overwrite=True)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import flashi2v.weights.transformer as wt

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(wt, "save_safetensors", boom)
    with pytest.raises(RuntimeError):
        save_transformer(FlashI2VTransformer(small_config()), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_strict_errors_list_every_problem(tmp_path):
    ref = FlashI2VTransformer(small_config())
    sd = dict(ref.state_dict())
    sd.pop("blocks.0.ffn.0.bias")
    sd["blocks.0.extra.weight"] = torch.zeros(3)
    sd["head.head.weight"] = torch.zeros(5, 64)
    with pytest.raises(CheckpointError) as e:
        load_transformer(sd, small_config())
    msg = str(e.value)
    assert "\n" not in msg
    assert "1 missing: blocks.0.ffn.0.bias" in msg and "1 unexpected: blocks.0.extra.weight" in msg
    assert "head.head.weight (checkpoint (5, 64) vs model (64, 64))" in msg


def test_unreadable_inputs(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_transformer(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_transformer(bad)
    torch.save({"a": 1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_transformer(tmp_path / "x.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointError, match="without config.json"):
        load_transformer(tmp_path / "folder")
    # a file that is no pickle at all (an image given as --transformer): torch's multi-line advice to rerun with
    # weights_only=False does not apply; the message says what the file is not
    png = tmp_path / "image.pt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match="not a PyTorch state dict of tensors") as e:
        load_transformer(png)
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="infer"):
        infer_config({"foo": torch.zeros(1)})


def test_legacy_non_zip_pickle_is_read(tmp_path):
    """Old torch.save files (no zip container) cannot be memory-mapped; the reader falls back to a plain load."""
    from flashi2v.weights import read_state_dict

    sd = {"a.weight": torch.randn(3, 2), "b": torch.arange(4.0)}
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    out = read_state_dict(tmp_path / "legacy.pth")
    assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd)


@pytest.mark.parametrize("model_type, in_dim", [("i2v-concat-mask", 36), ("i2v-concat-noise", 32)])
def test_concat_types_save_infer_and_from_t2v(tmp_path, model_type, in_dim):
    from flashi2v.paradigms import paradigm_for

    cfg = small_config(model_type=model_type, num_heads=2, dim=256, ffn_dim=64, num_layers=1)  # head dim 128
    assert cfg.in_dim == in_dim
    ref = randomize_(WanTransformer(cfg)).eval()

    def out(m):
        with torch.no_grad():
            return paradigm_for(m).denoiser(m, Z, 2)(X, T, CTX)

    # our folder records the type and reloads it
    save_transformer(ref, tmp_path / "transformer")
    saved = json.loads((tmp_path / "transformer" / "config.json").read_text())
    assert saved["model_type"] == model_type and saved["in_dim"] == in_dim
    model, _ = load_transformer(tmp_path / "transformer")
    assert model.config == cfg and torch.equal(out(model), out(ref))
    # a single file: the type is inferred from the patch embedding's input channels
    _save(ref.state_dict(), tmp_path / "ckpt.safetensors")
    assert infer_config(ref.state_dict()).model_type == model_type
    model, _ = load_transformer(tmp_path / "ckpt.safetensors")
    assert model.config == cfg.replace(text_len=512) and torch.equal(out(model), out(ref))
    # from a T2V checkpoint: refused without from_t2v, exactly the T2V model with it
    t2v = randomize_(WanTransformer(cfg.with_model_type("t2v"))).eval()
    _save(t2v.state_dict(), tmp_path / "t2v.safetensors")
    with pytest.raises(CheckpointError, match="from_t2v=True"):
        load_transformer(tmp_path / "t2v.safetensors", model_type=model_type)
    model, report = load_transformer(tmp_path / "t2v.safetensors", from_t2v=True, model_type=model_type)
    assert model.config.model_type == model_type and report.padded == {"patch_embedding.weight": in_dim - 16}
    with torch.no_grad():
        assert torch.equal(out(model), t2v(X, T, CTX))


def test_unknown_input_channels_and_wan_i2v_are_explained():
    sd = WanTransformer(small_config(model_type="t2v")).state_dict()
    bad = dict(sd, **{"patch_embedding.weight": torch.zeros(64, 20, 1, 2, 2)})
    with pytest.raises(CheckpointError, match="20 input channels .* fits no model type"):
        infer_config(bad)
    with pytest.raises(CheckpointError, match="Wan2.1-I2V"):
        infer_config(dict(sd, **{"img_emb.proj.0.weight": torch.zeros(4)}))


def test_atomic_directory_has_normal_permissions(tmp_path):
    """The finished folder gets the mode of an ordinary mkdir (mkdtemp's 0700 would hide shipped models)."""
    from flashi2v.weights.io import atomic_directory

    (tmp_path / "plain").mkdir()
    with atomic_directory(tmp_path / "atomic") as tmp:
        (tmp / "x").write_text("1")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode
    with atomic_directory(tmp_path / "atomic", overwrite=True) as tmp:
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in (tmp_path / "atomic").iterdir()) == ["y"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_atomic_save_safetensors_replaces_whole_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    """The file appears complete (with the usual mode) or not at all; an old file survives a failed write."""
    import safetensors.torch
    from safetensors.torch import load_file

    from flashi2v.weights.io import atomic_save_safetensors

    path = tmp_path / "w.safetensors"
    atomic_save_safetensors({"a": torch.ones(2)}, path, metadata={"format": "pt"})
    (tmp_path / "plain").write_text("")
    assert path.stat().st_mode == (tmp_path / "plain").stat().st_mode

    def half_written(tensors, filename, metadata=None):  # e.g. the disk fills up mid-write
        open(filename, "wb").write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="No space"):
        atomic_save_safetensors({"a": torch.zeros(2)}, path)
    assert torch.equal(load_file(str(path))["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "w.safetensors"]


def test_output_places_that_cannot_be_written_are_one_line_input_errors(tmp_path, monkeypatch):
    """Every atomic writer (model folders, world datasets, LMDBs, text files) reports a parent that is a file, a folder
    it may not write in, or a failing mkdir as one InputError line (they were FileExistsError / NotADirectoryError /
    FileNotFoundError tracebacks) and leaves nothing behind."""
    import errno
    import os
    from pathlib import Path

    from flashi2v.errors import InputError
    from flashi2v.weights.io import atomic_directory, atomic_write_text, make_dirs

    (tmp_path / "afile").write_text("x")
    (tmp_path / "ro").mkdir()
    with pytest.raises(InputError, match="afile is a file, not a folder"):
        with atomic_directory(tmp_path / "afile" / "out"):
            pass
    with pytest.raises(InputError, match="afile is a file, not a folder"):
        atomic_write_text(tmp_path / "afile" / "sub" / "x.json", "{}")
    with pytest.raises(InputError, match="a file of that name exists"):
        make_dirs(tmp_path / "afile")
    with pytest.raises(InputError, match="is an existing folder"):
        atomic_write_text(tmp_path / "ro", "{}")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    with pytest.raises(InputError, match="no permission to write in"):
        with atomic_directory(tmp_path / "ro" / "out"):
            pass
    monkeypatch.undo()

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(InputError, match="Read-only file system") as e:
        with atomic_directory(tmp_path / "new" / "out"):
            pass
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "ro"] and not any((tmp_path / "ro").iterdir())
