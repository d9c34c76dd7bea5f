"""What `flashi2v generate` spends outside the DiT on the default model, ours against the libraries it replaced.

Three rows, each a baseline and ours run side by side (interleaved repetitions, medians; this machine is noisy):

* **cold import** (fresh interpreters, torch already counted out): diffusers' ``AutoencoderKLWan`` + transformers'
  ``BertModel`` and ``AutoTokenizer`` (the engines before) against ``flashi2v.models.wan_vae`` +
  ``flashi2v.text.bert`` + ``tokenizers``;
* **VAE decode** of a default-model clip (9 latent frames -> 17 x 128 x 128): diffusers' ``AutoencoderKLWan`` in the
  official chunks against our network in one pass (``WanVAE.enable_one_pass``, what the pipeline uses), with our
  network in the official chunks as a third column;
* **MiniLM encode** of one caption (layer 5, 128 tokens): transformers' ``BertModel`` (asked for all hidden states,
  as the encoder did before) against ours, which stops after layer 5.

Needs the test extra (diffusers). Usage: ``python benchmarks/generate_overhead.py [--repeats 5] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import torch

BASELINE_IMPORT = ("import torch, time; t = time.perf_counter(); from diffusers import AutoencoderKLWan; "
                   "from transformers import BertModel, AutoTokenizer; print(time.perf_counter() - t)")
OURS_IMPORT = ("import torch, time; t = time.perf_counter(); import flashi2v.models.wan_vae, flashi2v.text.bert, "
               "tokenizers; print(time.perf_counter() - t)")


def cold_import(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def timed(fn) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    base, ours = [], []
    for _ in range(args.repeats):
        base.append(cold_import(BASELINE_IMPORT))
        ours.append(cold_import(OURS_IMPORT))
    rows.append(("cold import (s)", "diffusers VAE + transformers BERT", statistics.median(base), statistics.median(ours),
                 None))

    from diffusers import AutoencoderKLWan

    from flashi2v.default_model import default_model_path
    from flashi2v.vae import WanVAE

    vae = WanVAE.from_pretrained(default_model_path() / "vae", dtype=torch.float32)
    c = vae.config
    with tempfile.TemporaryDirectory() as folder:  # the same VAE as a diffusers folder, loaded by diffusers
        vae.save_diffusers_folder(folder)
        twin = AutoencoderKLWan.from_pretrained(folder).eval()
    z = torch.randn(1, c["z_dim"], 9, 32, 32, generator=torch.Generator().manual_seed(0))
    net = vae.model
    base, ours, chunks = [], [], []
    timed(lambda: twin.decode(z))  # warm-up
    for _ in range(args.repeats):
        base.append(timed(lambda: twin.decode(z)))
        net.one_pass_max_pixels = 4 * 17 * 256 * 256
        ours.append(timed(lambda: net.decode_latents(z)))
        net.one_pass_max_pixels = 0
        chunks.append(timed(lambda: net.decode_latents(z)))
    rows.append(("VAE decode 17x128x128 (s)", "diffusers, official chunks", statistics.median(base),
                 statistics.median(ours), statistics.median(chunks)))

    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its load report lists the pooler weights the folder has and BERT skips

    from flashi2v.text.minilm import MiniLMTextEncoder, minilm_package_path

    enc = MiniLMTextEncoder.from_package(text_len=128, hidden_layer=5)
    ref = BertModel.from_pretrained(str(minilm_package_path()), add_pooling_layer=False).eval()
    ids, mask = enc.tokenize(["A photo of a cat, with the camera panning down: a white dotted circle drops down."])
    types = torch.zeros_like(ids)
    base, ours = [], []
    for _ in range(args.repeats):
        base.append(timed(lambda: ref(input_ids=ids, attention_mask=mask, token_type_ids=types,
                                      output_hidden_states=True)))
        ours.append(timed(lambda: enc.model(ids, mask, upto=5)))
    rows.append(("MiniLM encode, layer 5 (ms)", "transformers BertModel", 1e3 * statistics.median(base),
                 1e3 * statistics.median(ours), None))

    print(f"{args.threads} threads, median of {args.repeats}; ratio = baseline / ours\n")
    print("| what | baseline | baseline's | ours | ratio | ours, official chunks |")
    print("|---|---|---|---|---|---|")
    for what, name, b, o, extra in rows:
        print(f"| {what} | {name} | {b:.3g} | {o:.3g} | {b / o:.2f}x | {'' if extra is None else f'{extra:.3g}'} |")


if __name__ == "__main__":
    main()
