"""The image-reliance probe (`flashi2v bench reliance`) on constructed models with known answers."""

from __future__ import annotations

import pytest
import torch

from flashi2v import FlashI2VTransformer, TransformerConfig
from flashi2v.bench.reliance import image_reliance, parse_swaps, swap_words
from flashi2v.errors import InputError
from flashi2v.paradigms import paradigm_for

TINY = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=16, text_len=8, freq_dim=32)


def data(b=4, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, 16, t, 8, 8, generator=g)
    return x0, x0[:, :, :1].clone(), torch.randn(b, 8, 16, generator=g)


class CopyingConcatModel(torch.nn.Module):
    """A perfect 'leaker' for the mask-concat paradigm: x̂0 = the condition image on frame 0, zeros elsewhere."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, context):
        y, image = x[:, :16], x[:, 20:]  # [state (16), mask (4), image latent padded over time (16)]
        s = (t.float() / 1000).view(-1, 1, 1, 1, 1)
        return (y - image) / s  # so that y - s * v = image


def test_fresh_flashi2v_ignores_the_image_exactly():
    torch.manual_seed(0)
    model = FlashI2VTransformer(TransformerConfig(**TINY)).eval()  # zero-initialised φ and Fourier output convs
    res = image_reliance(model, *data(), sigmas=(0.9, 0.5))
    assert res.model_type == "flashi2v" and res.shift_std == 0.0 and res.latent_std > 0.5
    for row in res.rows:
        assert row.frame0_wrong == row.frame0 and row.rest_wrong == row.rest and row.reliance == 0.0
    assert [r.sigma for r in res.rows] == [0.9, 0.5]
    assert "| 0.90 |" in res.table() and res.to_dict()["rows"][0]["reliance"] == 0.0


def test_copying_model_has_zero_frame0_error_and_known_reliance():
    x0, z, ctx = data()
    res = image_reliance(CopyingConcatModel(), x0, z, ctx, sigmas=(0.98, 0.3), paradigm=paradigm_for("i2v-concat-mask"))
    var = x0.var().item()
    wrong = (z.roll(1, dims=0) - z).pow(2).mean().item() / var
    rest = x0[:, :, 1:].pow(2).mean().item() / var  # x̂0 = 0 on frames 1..
    for row in res.rows:
        assert row.frame0 == pytest.approx(0.0, abs=1e-6)
        assert row.frame0_wrong == pytest.approx(wrong, rel=1e-5) and row.reliance == pytest.approx(wrong, rel=1e-5)
        assert row.rest == pytest.approx(rest, rel=1e-5) and row.rest_wrong == pytest.approx(rest, rel=1e-5)
    assert res.shift_std is None


class PromptFollowingConcatModel(CopyingConcatModel):
    """Copies the image into frame 0 and writes the prompt's first number over frames 1.. (what the data below hold)."""

    def forward(self, x, t, context):
        y, image = x[:, :16], x[:, 20:]
        target = image.clone()
        target[:, :, 1:] = context[:, 0, 0].view(-1, 1, 1, 1, 1)
        return (y - target) / (t.float() / 1000).view(-1, 1, 1, 1, 1)


def test_prompt_reliance_on_a_model_that_follows_its_prompt():
    x0, z, ctx = data()
    x0[:, :, 1:] = ctx[:, 0, 0].view(-1, 1, 1, 1, 1)  # frames 1.. are what the caption says
    empty = torch.zeros_like(ctx[0])
    res = image_reliance(PromptFollowingConcatModel(), x0, z, ctx, sigmas=(0.9,), empty_context=empty,
                         paradigm=paradigm_for("i2v-concat-mask"))
    var = x0.var().item()
    c = ctx[:, 0, 0]
    row = res.rows[0]
    assert row.rest == pytest.approx(0.0, abs=1e-6) and row.frame0 == pytest.approx(0.0, abs=1e-6)
    assert row.rest_wrong_prompt == pytest.approx((c.roll(1) - c).pow(2).mean().item() / var, rel=1e-5)
    assert row.rest_empty_prompt == pytest.approx(c.pow(2).mean().item() / var, rel=1e-5)
    assert row.prompt_reliance == pytest.approx(row.rest_wrong_prompt, rel=1e-6) and row.prompt_reliance > 0
    assert res.to_dict()["rows"][0]["prompt_reliance"] == row.prompt_reliance and "prompt reliance" in res.table()
    without = image_reliance(PromptFollowingConcatModel(), x0, z, ctx, sigmas=(0.9,),
                             paradigm=paradigm_for("i2v-concat-mask"))
    assert without.rows[0].rest_wrong_prompt == row.rest_wrong_prompt
    assert without.rows[0].rest_empty_prompt != without.rows[0].rest_empty_prompt  # NaN: no empty prompt given
    assert without.to_dict()["rows"][0]["rest_empty_prompt"] is None and "| – |" in without.table()


def test_edited_prompt_column_has_the_known_value():
    x0, z, ctx = data()
    x0[:, :, 1:] = ctx[:, 0, 0].view(-1, 1, 1, 1, 1)
    edited = ctx.clone()
    edited[:, 0, 0] += 0.5  # the edit moves what the model writes over frames 1.. by 0.5 everywhere
    res = image_reliance(PromptFollowingConcatModel(), x0, z, ctx, sigmas=(0.9, 0.5), edited_context=edited,
                         edit="left<->right", paradigm=paradigm_for("i2v-concat-mask"))
    var = x0.var().item()
    for row in res.rows:
        assert row.rest == pytest.approx(0.0, abs=1e-6)
        assert row.rest_edited_prompt == pytest.approx(0.25 / var, rel=1e-5)  # (0.5)^2 on every value of frames 1..
        assert row.edit_reliance == pytest.approx(0.25 / var, rel=1e-5)
    assert "edited captions: left<->right" in res.table() and "edit reliance" in res.table()
    assert res.to_dict()["edit"] == "left<->right" and res.to_dict()["rows"][0]["edit_reliance"] > 0
    plain = image_reliance(PromptFollowingConcatModel(), x0, z, ctx, sigmas=(0.9,),
                           paradigm=paradigm_for("i2v-concat-mask"))
    assert plain.edit is None and "edit reliance" not in plain.table()
    assert plain.to_dict()["rows"][0]["edit_reliance"] is None
    with pytest.raises(InputError, match="edited_context must be"):
        image_reliance(PromptFollowingConcatModel(), x0, z, ctx, edited_context=edited[:2],
                       paradigm=paradigm_for("i2v-concat-mask"))


def test_swap_words_swaps_whole_words_both_ways_in_one_pass():
    swaps = parse_swaps(["left=right", "Up=down"])
    assert swaps == {"left": "right", "right": "left", "up": "down", "down": "up"}
    assert swap_words("Left, then right; it drifts up-left, upward and down.", swaps) == \
        "Right, then left; it drifts down-right, upward and up."
    assert swap_words("a cat", swaps) == "a cat" and swap_words("left", {}) == "left"
    for bad in (["left"], ["=right"], ["left=left"], ["a b=c"], ["left=right", "left=up"]):
        with pytest.raises(InputError, match="--swap-words"):
            parse_swaps(bad)


def test_trained_branches_make_the_probe_see_the_image():
    torch.manual_seed(0)
    model = FlashI2VTransformer(TransformerConfig(**TINY)).eval()
    model.init_condition_branches_xavier()
    res = image_reliance(model, *data())
    assert res.shift_std > 0.1 and all(abs(r.reliance) > 0 for r in res.rows)


def test_bad_inputs_are_one_line_errors():
    model = FlashI2VTransformer(TransformerConfig(**TINY)).eval()
    x0, z, ctx = data()
    with pytest.raises(InputError, match="at least 2 samples"):
        image_reliance(model, x0[:1], z[:1], ctx[:1])
    with pytest.raises(InputError, match="sigmas must be in"):
        image_reliance(model, x0, z, ctx, sigmas=(0.0,))
    with pytest.raises(InputError, match="first_frame_latents must be"):
        image_reliance(model, x0, z[:, :, :, :4], ctx)
    with pytest.raises(InputError, match="one row per sample"):
        image_reliance(model, x0, z, ctx[:2])
    with pytest.raises(InputError, match="empty_context must be"):
        image_reliance(model, x0, z, ctx, empty_context=ctx[0, :3])
    t2v = TransformerConfig(**TINY, model_type="t2v")
    from flashi2v.models.flashi2v import build_transformer

    with pytest.raises(InputError, match="no image condition"):
        image_reliance(build_transformer(t2v), x0, z, ctx)


@pytest.mark.parametrize("extra, message", [
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--guidance", "inf"], "--guidance must be a finite number, got inf"),
    (["--sample-steps", "0"], "--sample-steps must be a positive integer, got 0"),
    (["--device", "gpu7"], "unknown device 'gpu7'"),
    (["--arch", "num_layers=two"], "num_layers must be a positive integer, got 'two'"),
    (["--heads", "3"], "dim 32 is not divisible by num_heads 3"),
])
def test_bench_leakage_bad_options_fail_before_any_stage(tmp_path, capsys, extra, message):
    """Options that used to stop `bench leakage` only after its data (and training) stages, or with a traceback,
    are one-line errors before the work folder is made."""
    from flashi2v.cli import main

    work = tmp_path / "work"
    assert main(["bench", "leakage", "--quick", "--workdir", str(work), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not work.exists()


def test_bench_leakage_workdir_that_is_a_file(tmp_path, capsys):
    from flashi2v.cli import main

    (tmp_path / "afile").write_text("x")
    assert main(["bench", "leakage", "--quick", "--workdir", str(tmp_path / "afile")]) == 2
    assert "--workdir" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "x"
