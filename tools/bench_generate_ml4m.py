#!/usr/bin/env python
"""ml-4m's own sampler (fourm.models.generate.GenerationSampler) timed on the work of
`cargo run --release -p fourm-model --bin bench-generate -- --model perf`: the perf model (dim 256,
6 + 6 blocks, 8 heads, SwiGLU without biases, random weights), three 16x16 token images with 1024
codes and a 32-token caption of 1000 words; MaskGIT and ROAR decoding of tok_rgb (256 tokens, 8
steps, cosine schedule) from tok_depth and tok_normal, and greedy autoregressive decoding of the
caption from tok_rgb without stopping at EOS (ml-4m has no key/value cache). Greedy everywhere
(temperature 0), batch 1, 2 threads. Prints the median of --runs runs after one warm-up, as
bench-generate does, so the two can be read side by side. Run both back to back on an idle machine.

Usage: FOURM_REF=<apple/ml-4m checkout> python tools/bench_generate_ml4m.py [--runs 5] [--steps 8]
(the anchors' venv has torch and ml-4m's dependencies).
"""
import argparse
import os
import statistics
import sys
import time
from functools import partial

sys.path.insert(0, os.environ["FOURM_REF"])

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fourm.data.modality_info import MODALITY_INFO  # noqa: E402
from fourm.models.decoder_embeddings import ImageTokenDecoderEmbedding, SequenceDecoderEmbedding  # noqa: E402
from fourm.models.encoder_embeddings import ImageTokenEncoderEmbedding, SequenceEncoderEmbedding  # noqa: E402
from fourm.models.fm import FourM  # noqa: E402
from fourm.models.fm_utils import LayerNorm  # noqa: E402
from fourm.models.generate import (  # noqa: E402
    GenerationSampler,
    build_chained_generation_schedules,
    init_empty_target_modality,
    init_full_input_modality,
)
from fourm.utils import generate_uint15_hash  # noqa: E402

GRID, CODES, WORDS, CAPTION = 16, 1024, 1000, 32
IMAGES = ["tok_rgb@256", "tok_depth@256", "tok_normal@256"]


def modality_info():
    info = {}
    for name in IMAGES:
        m = dict(MODALITY_INFO[name.replace("@256", "@224")])
        m.update(type="img", input_size=GRID * 16, patch_size=16, vocab_size=CODES,
                 max_tokens=GRID * GRID, min_tokens=0, id=generate_uint15_hash(name))
        info[name] = m
    caption = dict(MODALITY_INFO["caption"])
    caption.update(type="seq", vocab_size=WORDS, max_tokens=CAPTION, min_tokens=0,
                   id=generate_uint15_hash("caption"))
    info["caption"] = caption
    return info


def text_tokenizer():
    """A WordPiece vocabulary with ml-4m's special tokens first ([PAD]=0 ... [EOS]=3, sentinels)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece

    specials = ["[PAD]", "[UNK]", "[SOS]", "[EOS]"] + [f"[S_{i}]" for i in range(20)]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(WORDS - len(specials))])}
    tok = Tokenizer(WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.add_special_tokens(specials)
    return tok


def build_model(info):
    enc, dec = {}, {}
    for name, m in info.items():
        if m["type"] == "img":
            size = dict(patch_size=16, image_size=GRID * 16)
            enc[name] = ImageTokenEncoderEmbedding(vocab_size=CODES, **size)
            dec[name] = ImageTokenDecoderEmbedding(vocab_size=CODES, **size)
        else:
            seq = dict(vocab_size=WORDS, max_length=CAPTION, padding_idx=0)
            enc[name] = SequenceEncoderEmbedding(**seq)
            dec[name] = SequenceDecoderEmbedding(**seq)
    return FourM(encoder_embeddings=enc, decoder_embeddings=dec, modality_info=info, dim=256,
                 encoder_depth=6, decoder_depth=6, num_heads=8, mlp_ratio=4.0, qkv_bias=False,
                 proj_bias=False, mlp_bias=False, norm_layer=partial(LayerNorm, eps=1e-6, bias=False),
                 act_layer=nn.SiLU, gated_mlp=True).eval()


def tokens(seed):
    """The same deterministic token grid as bench-generate's `tokens(1, 256, 1024, seed)`."""
    return torch.tensor([[(i * 37 + seed * 11) % CODES for i in range(GRID * GRID)]])


def median_time(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = modality_info()
    sampler = GenerationSampler(build_model(info))
    tok = text_tokenizer()
    print(f"ml-4m {os.environ['FOURM_REF']}: torch {torch.__version__}, {args.threads} threads, batch 1")

    def image_condition():
        d = {name: {"tensor": tokens(seed)} for name, seed in [("tok_depth@256", 1), ("tok_normal@256", 2)]}
        for name in d:
            d = init_full_input_modality(d, info, name, "cpu")
        return init_empty_target_modality(d, info, "tok_rgb@256", 1, GRID * GRID, "cpu")

    for scheme in ["maskgit", "roar"]:
        schedule = build_chained_generation_schedules(
            cond_domains=["tok_depth@256", "tok_normal@256"], target_domains=["tok_rgb@256"],
            tokens_per_target=[GRID * GRID], autoregression_schemes=[scheme],
            decoding_steps=[args.steps], token_decoding_schedules=["cosine"], temps=[0.0],
            temp_schedules=["constant"], cfg_scales=[1.0], cfg_schedules=["constant"],
            modality_info=info)
        condition = image_condition()
        with torch.no_grad():
            t, _ = median_time(lambda: sampler.generate(condition, schedule, seed=0), args.runs)
        print(f"  {scheme + f' {args.steps} steps':<24} {t * 1e3:9.1f} ms  {GRID * GRID / t:9.0f} tokens/s"
              f"  ({GRID * GRID} tokens)")

    d = init_full_input_modality({"tok_rgb@256": {"tensor": tokens(3)}}, info, "tok_rgb@256", "cpu")
    d = init_empty_target_modality(d, info, "caption", 1, CAPTION, "cpu")
    with torch.no_grad():
        t, out = median_time(lambda: sampler.autoregressive_step_batched(
            d, "caption", temperature=0.0, top_k=0.0, top_p=0.0, use_eos=False, text_tokenizer=tok),
            args.runs)
    # ml-4m's loop runs once per position of the target (max_tokens), one token each.
    decoded = CAPTION
    print(f"  {'autoregressive':<24} {t * 1e3:9.1f} ms  {decoded / t:9.0f} tokens/s  ({decoded} tokens)")


if __name__ == "__main__":
    main()
