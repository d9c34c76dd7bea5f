"""Tests of flashi2v.media: official image transform (golden), image loading, sizes, video I/O, grid, text files."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flashi2v.errors import FlashI2VError, InputError
from flashi2v.media import (
    center_crop_resize,
    crf_from_quality,
    crop_resize_size,
    fit_resolution,
    load_image,
    make_grid,
    preprocess_image,
    read_lines,
    read_prompt_image_pairs,
    read_video,
    to_model_range,
    to_uint8_frames,
    validate_size,
    write_video,
)

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
TRANSFORM_GOLDEN = GOLDEN / "transforms" / "image_transform.safetensors"


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert isinstance(excinfo.value, FlashI2VError)
    return msg


def _rand_rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _smooth_video(f, h, w):
    """Smooth moving colour gradients (compress well, so the MP4 error reflects the codec, not noise)."""
    y = np.arange(h, dtype=np.float64)[:, None]
    x = np.arange(w, dtype=np.float64)[None, :]
    out = np.empty((f, h, w, 3), np.uint8)
    for t in range(f):
        out[t, ..., 0] = 128 + 100 * np.sin(2 * np.pi * (x + 3 * t) / w)
        out[t, ..., 1] = 128 + 100 * np.cos(2 * np.pi * (y + 2 * t) / h)
        out[t, ..., 2] = (40 + 170 * (x + y) / (h + w) + 2 * t).clip(0, 255)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Official transform (golden)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transform_golden():
    if not TRANSFORM_GOLDEN.is_file():
        pytest.skip(f"golden data not found at {TRANSFORM_GOLDEN} (expected ../shared/golden next to the repo)")
    from safetensors.torch import load_file

    return load_file(str(TRANSFORM_GOLDEN))


@pytest.mark.parametrize("name", ["wide", "tall"])
def test_golden_transform_exact(transform_golden, name):
    x = transform_golden[f"{name}_uint8"]
    ref = transform_golden[f"{name}_out"]
    out = to_model_range(center_crop_resize(x, 48, 80))
    assert out.shape == ref.shape == (1, 3, 48, 80)
    assert out.dtype == torch.float32
    assert torch.equal(out, ref), (out - ref).abs().max().item()
    # [3,H,W] input gives the same result; the float kernel would not (that is why uint8 matters)
    assert torch.equal(to_model_range(center_crop_resize(x[0], 48, 80)), ref[0])
    # the float kernel would not match: the test is sensitive to running the resize on uint8
    new_h, new_w, top, left = crop_resize_size(*x.shape[-2:], 48, 80)
    f = torch.nn.functional.interpolate(x.float(), size=(new_h, new_w), mode="bicubic", antialias=True)
    f = f[..., top : top + 48, left : left + 80].round().clamp(0, 255) / 255.0 * 2.0 - 1.0
    assert not torch.equal(f, ref)


def test_crop_resize_size_rule():
    assert crop_resize_size(90, 150, 48, 80) == (48, 80, 0, 0)  # same aspect
    assert crop_resize_size(120, 70, 48, 80) == (138, 80, 45, 0)  # tall: width fits, ceil(80*120/70) = 138
    assert crop_resize_size(100, 400, 48, 80) == (48, 192, 0, 56)  # wide: height fits
    assert crop_resize_size(49, 80, 48, 80) == (49, 80, 0, 0)  # round(0.5) = 0 (half to even, as official)


def test_center_crop_resize_rejects_float_and_bad_shape():
    with pytest.raises(InputError) as e:
        center_crop_resize(torch.zeros(1, 3, 8, 8), 4, 4)
    assert "uint8" in _one_line_error(e)
    with pytest.raises(InputError):
        center_crop_resize(torch.zeros(8, 8, dtype=torch.uint8), 4, 4)


# ---------------------------------------------------------------------------------------------------------------
# Image loading
# ---------------------------------------------------------------------------------------------------------------


def test_load_png_jpeg_webp(tmp_path):
    rgb = _rand_rgb(20, 30)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.webp", lossless=True)
    smooth = _smooth_video(1, 20, 30)[0]
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)

    png = load_image(tmp_path / "a.png")
    assert png.dtype == torch.uint8 and png.shape == (3, 20, 30)
    assert torch.equal(png, torch.from_numpy(rgb).permute(2, 0, 1))
    assert torch.equal(load_image(str(tmp_path / "a.webp")), png)
    jpg = load_image(tmp_path / "a.jpg")
    assert jpg.shape == (3, 20, 30)
    assert (jpg.float() - torch.from_numpy(smooth).permute(2, 0, 1).float()).abs().mean() < 4


def test_load_rgba_modes(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = [10, 20, 30]
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent pixel
    rgba[1, 1, 3] = 128  # half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    white = load_image(tmp_path / "t.png")
    assert white[:, 0, 0].tolist() == [255, 255, 255]
    assert white[:, 2, 2].tolist() == [10, 20, 30]
    assert 120 < white[0, 1, 1].item() < 140  # 10 * 128/255 + 255 * 127/255 ~ 132
    assert load_image(tmp_path / "t.png", alpha="black")[:, 0, 0].tolist() == [0, 0, 0]
    assert load_image(tmp_path / "t.png", alpha="drop")[:, 0, 0].tolist() == [10, 20, 30]  # official behaviour
    with pytest.raises(InputError):
        load_image(tmp_path / "t.png", alpha="grey")


def test_load_grey_palette_16bit_cmyk(tmp_path):
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (3, 4, 5)
    assert torch.equal(g[0], torch.from_numpy(grey)) and torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])

    rgb = _rand_rgb(6, 7, seed=1)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    assert torch.equal(load_image(tmp_path / "p.png"), torch.from_numpy(np.array(pal.convert("RGB"))).permute(2, 0, 1))

    g16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    l16 = load_image(tmp_path / "g16.png")
    assert l16.shape == (3, 3, 4)
    assert torch.equal(l16[0], torch.from_numpy(np.rint(g16 / 257.0).astype(np.uint8)))

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert load_image(tmp_path / "c.jpg").shape == (3, 6, 7)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(_rand_rgb(10, 30))  # width 30, height 10
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "r.jpg").shape == (3, 30, 10)
    assert load_image(tmp_path / "r.jpg", exif_transpose=False).shape == (3, 10, 30)


def test_load_arrays_and_tensors():
    rgb = _rand_rgb(5, 6, seed=2)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert torch.equal(load_image(rgb), chw)
    assert torch.equal(load_image(Image.fromarray(rgb)), chw)
    assert torch.equal(load_image(chw), chw)
    assert torch.equal(load_image(chw.unsqueeze(0)), chw)
    assert torch.equal(load_image(rgb.astype(np.float32) / 255.0), chw)
    assert torch.equal(load_image(chw.float() / 255.0), chw)
    assert load_image(rgb[..., 0]).shape == (3, 5, 6)
    with pytest.raises(InputError) as e:
        load_image(rgb.astype(np.float32) / 127.5 - 1.0)
    assert "[0, 1]" in _one_line_error(e)
    with pytest.raises(InputError) as e:
        load_image(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    assert "transpose" in _one_line_error(e)
    with pytest.raises(InputError) as e:
        load_image(torch.from_numpy(rgb))
    assert "permute" in _one_line_error(e)
    with pytest.raises(InputError):
        load_image(12345)


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError) as e:
        load_image(missing)
    assert "nope.png" in _one_line_error(e) and "does not exist" in str(e.value)

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image at all")
    with pytest.raises(InputError) as e:
        load_image(bad)
    assert "bad.png" in _one_line_error(e)

    buf = io.BytesIO()
    Image.fromarray(_rand_rgb(64, 64)).save(buf, format="PNG")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError) as e:
        load_image(trunc)
    assert "trunc.png" in _one_line_error(e)

    with pytest.raises(InputError) as e:
        load_image(tmp_path)
    assert "folder" in _one_line_error(e)


def test_preprocess_image(tmp_path):
    Image.fromarray(_rand_rgb(60, 100)).save(tmp_path / "x.png")
    x = preprocess_image(tmp_path / "x.png", 32, 48)
    assert x.shape == (1, 3, 32, 48) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    ref = to_model_range(center_crop_resize(load_image(tmp_path / "x.png").unsqueeze(0), 32, 48))
    assert torch.equal(x, ref)
    with pytest.raises(InputError):
        preprocess_image(tmp_path / "x.png", 30, 48)


# ---------------------------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------------------------


def test_validate_size_messages():
    assert validate_size(480, 832) == (480, 832)
    with pytest.raises(InputError) as e:
        validate_size(500, 832)
    assert _one_line_error(e) == "height 500 is not a multiple of 16; try 496 or 512"
    with pytest.raises(InputError) as e:
        validate_size(480, 8)
    assert _one_line_error(e) == "width 8 is not a multiple of 16; try 16"
    with pytest.raises(InputError):
        validate_size(0, 832)
    with pytest.raises(InputError):
        validate_size("480", 832)


@pytest.mark.parametrize(
    "hw", [(480, 832), (832, 480), (1080, 1920), (1920, 1080), (1000, 1000), (768, 1024), (3000, 1000), (333, 1777)]
)
def test_fit_resolution_properties(hw):
    area = 480 * 832
    h, w = fit_resolution(*hw, target_area=area)
    assert h % 16 == 0 and w % 16 == 0
    assert 0.9 * area <= h * w <= area
    assert abs(math.log((h / w) / (hw[0] / hw[1]))) < 0.035


def test_fit_resolution_examples():
    assert fit_resolution(480, 832) == (480, 832)
    assert fit_resolution(1080, 1920) == (480, 832)
    assert fit_resolution(1000, 1000) == (624, 624)
    assert fit_resolution(720, 1280, target_area=720 * 1280) == (720, 1280)
    with pytest.raises(InputError):
        fit_resolution(0, 10)
    with pytest.raises(InputError):
        fit_resolution(10, 10, target_area=100)


# ---------------------------------------------------------------------------------------------------------------
# Post-processing, grid
# ---------------------------------------------------------------------------------------------------------------


def test_to_uint8_frames_matches_official_formula():
    v = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 0.999]).view(1, 1, 8, 1, 1).expand(2, 3, 8, 1, 1)
    out = to_uint8_frames(v.contiguous())
    assert out.shape == (2, 8, 1, 1, 3) and out.dtype == torch.uint8
    assert out[0, :, 0, 0, 0].tolist() == [0, 0, 64, 128, 191, 255, 255, 255]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 2, 4, 5, generator=g)
    ref = (((x.clamp(-1, 1) + 1) / 2) * 255 + 0.5).clamp(0, 255).permute(0, 2, 3, 4, 1).to(torch.uint8)
    assert torch.equal(to_uint8_frames(x), ref)
    assert torch.equal(to_uint8_frames(x[0]), ref[0])


def test_make_grid_official_layout():
    vids = torch.arange(1, 4, dtype=torch.uint8).view(3, 1, 1, 1, 1).expand(3, 2, 4, 5, 3).contiguous()
    grid = make_grid(vids)  # 3 videos -> 2 rows x 2 cols
    assert grid.shape == (2, (4 + 1) * 2 + 1, (5 + 1) * 2 + 1, 3)
    assert (grid[:, 0:4, 0:5] == 1).all()
    assert (grid[:, 0:4, 6:11] == 2).all()
    assert (grid[:, 5:9, 0:5] == 3).all()
    assert (grid[:, 5:9, 6:11] == 0).all()  # empty cell
    assert (grid[:, 4] == 0).all() and (grid[:, :, 5] == 0).all()  # 1-pixel separators
    assert (grid[:, 9:] == 0).all() and (grid[:, :, 11:] == 0).all()  # bottom/right edge
    assert make_grid(vids[:1]).shape == (2, 6, 7, 3)
    assert make_grid(vids, nrow=1).shape == (2, 6, 3 * 6 + 1, 3)
    with pytest.raises(InputError):
        make_grid(vids.float())


# ---------------------------------------------------------------------------------------------------------------
# Video writing / reading
# ---------------------------------------------------------------------------------------------------------------


def test_mp4_round_trip(tmp_path):
    frames = _smooth_video(9, 64, 96)
    out = write_video(torch.from_numpy(frames), tmp_path / "v.mp4", fps=16)
    assert out == tmp_path / "v.mp4" and out.is_file()
    back, fps = read_video(out)
    assert back.shape == (9, 64, 96, 3) and back.dtype == torch.uint8
    assert fps == 16.0
    # measured: mean 2.57, max 16 at CRF 20 (even CRF 0 gives mean 2.1: RGB<->YUV rounding and 4:2:0 chroma)
    err = (back.float() - torch.from_numpy(frames).float()).abs()
    assert err.mean() < 3.5, err.mean()
    assert err.max() < 32, err.max()
    assert read_video(out, max_frames=3)[0].shape[0] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_mp4_odd_size_is_padded(tmp_path):
    frames = _smooth_video(3, 33, 45)
    write_video(frames, tmp_path / "odd.mp4", fps=8, crf=0)
    back, fps = read_video(tmp_path / "odd.mp4")
    assert back.shape == (3, 34, 46, 3) and fps == 8.0
    # content is kept at the top-left (no rescale); small frames with strong colour gradients lose more to 4:2:0
    assert (back[:, :33, :45].float() - torch.from_numpy(frames).float()).abs().mean() < 5
    assert (back[:, 33].float() - back[:, 32].float()).abs().mean() < 3  # padding repeats the last row


def test_gif_and_png_outputs(tmp_path):
    frames = _smooth_video(5, 16, 20)
    gif = write_video(frames, tmp_path / "a.gif", fps=16)
    with Image.open(gif) as im:
        assert im.size == (20, 16) and im.n_frames == 5
        total = 0
        for i in range(im.n_frames):
            im.seek(i)
            total += im.info["duration"]
    assert total == 310  # round(5 * 100 / 16) centiseconds -> 5 frames at 16 fps
    g, _ = read_video(gif)
    assert g.shape == (5, 16, 20, 3)

    d = write_video(frames, tmp_path / "frames", fps=16)
    names = sorted(p.name for p in d.iterdir())
    assert names == [f"frame_{i:05d}.png" for i in range(5)]
    assert np.array_equal(np.asarray(Image.open(d / "frame_00003.png")), frames[3])
    # rewriting a frames folder replaces it; format="png" forces frames
    write_video(frames[:2], d, format="png")
    assert sorted(p.name for p in d.iterdir()) == ["frame_00000.png", "frame_00001.png"]
    (d / "notes.txt").write_text("x")
    with pytest.raises(InputError):
        write_video(frames, d)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "frames"]


def test_write_is_atomic(tmp_path):
    good = _smooth_video(4, 16, 16)
    target = tmp_path / "v.mp4"
    write_video(good, target)
    before = target.read_bytes()

    def frames_then_bad():
        yield good[0]
        yield good[1]
        yield np.zeros((16, 17, 3), np.uint8)  # wrong shape mid-way

    with pytest.raises(InputError) as e:
        write_video(frames_then_bad(), target)
    assert "frame 2" in _one_line_error(e)
    assert target.read_bytes() == before  # old file untouched
    with pytest.raises(InputError):
        write_video(frames_then_bad(), tmp_path / "new.mp4")
    with pytest.raises(InputError):
        write_video(frames_then_bad(), tmp_path / "new.gif")
    with pytest.raises(InputError):
        write_video(frames_then_bad(), tmp_path / "newframes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no partial or temporary files


def test_write_video_input_errors(tmp_path):
    frames = _smooth_video(2, 8, 8)
    for bad in (frames.astype(np.float32), frames[..., :2], frames[None]):
        with pytest.raises(InputError):
            write_video(bad, tmp_path / "x.mp4")
    with pytest.raises(InputError) as e:
        write_video(frames, tmp_path / "x.avi")
    assert ".avi" in _one_line_error(e)
    with pytest.raises(InputError):
        write_video(frames, tmp_path / "x.png")
    with pytest.raises(InputError):
        write_video(frames, tmp_path / "x.mp4", fps=0)
    with pytest.raises(InputError):
        write_video(frames, tmp_path / "x.mp4", crf=20, quality=6)
    assert crf_from_quality(6) == 20
    assert list(tmp_path.iterdir()) == []


def test_read_video_errors(tmp_path):
    with pytest.raises(InputError) as e:
        read_video(tmp_path / "missing.mp4")
    assert "missing.mp4" in _one_line_error(e)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError) as e:
        read_video(bad)
    assert "bad.mp4" in _one_line_error(e)


# ---------------------------------------------------------------------------------------------------------------
# Batch-mode text files
# ---------------------------------------------------------------------------------------------------------------


def test_read_lines(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_bytes("\ufeff a cat  \r\nsecond\r\n\r\n\n".encode("utf-8"))
    assert read_lines(p) == ["a cat", "second"]
    with pytest.raises(InputError):
        read_lines(tmp_path / "missing.txt")


def test_prompt_image_pairs(tmp_path, monkeypatch):
    sub = tmp_path / "assets"
    (sub / "imgs").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(_rand_rgb(4, 4)).save(sub / "imgs" / name)
    prompts = tmp_path / "prompts.txt"
    images = sub / "images.txt"
    prompts.write_text("first prompt\nsecond prompt\n\n")
    images.write_text(f"imgs/a.png\n{sub / 'imgs' / 'b.png'}\n")
    monkeypatch.chdir(tmp_path)  # relative paths resolve against images.txt's folder, not the cwd
    pairs = read_prompt_image_pairs("prompts.txt", "assets/images.txt")
    assert pairs == [("first prompt", sub / "imgs" / "a.png"), ("second prompt", sub / "imgs" / "b.png")]

    prompts.write_text("one\ntwo\nthree\n")
    with pytest.raises(InputError) as e:
        read_prompt_image_pairs(prompts, images)
    msg = _one_line_error(e)
    assert "3 prompts" in msg and "2 image paths" in msg

    prompts.write_text("one\n\ntwo\n")
    with pytest.raises(InputError) as e:
        read_prompt_image_pairs(prompts, images)
    assert "line 2 is empty" in _one_line_error(e)

    prompts.write_text("one\ntwo\n")
    images.write_text("imgs/a.png\nimgs/missing.png\n")
    with pytest.raises(InputError) as e:
        read_prompt_image_pairs(prompts, images)
    assert "missing.png" in _one_line_error(e) and "line 2" in str(e.value)
    assert len(read_prompt_image_pairs(prompts, images, check_exists=False)) == 2
