#!/usr/bin/env python
"""ml-4m's blocks (fourm.models.fm_utils Block / DecoderBlock, fm_*_swiglu_nobias: SwiGLU, no
biases, bias-less LayerNorm eps 1e-6) timed phase by phase on the work of
`cargo run --release -p fourm-model --bin bench-phases`: batch 8, 128 encoder and 128 decoder
tokens, dim 256, 8 heads, 6 + 6 blocks. For each kind of sub-layer (encoder self-attention and
MLP; decoder self-attention with a [b, m, m] mask of density 1/2, cross-attention, MLP) the
forward and the backward of `sum(x + sublayer(norm(x)))` from a fresh leaf input, summed over the
blocks; the median of --runs runs after one warm-up. What a whole step has beyond these is in
the anchors' perf_step.py (forward, backward). Run both back to back on an idle machine.

Usage: FOURM_REF=<apple/ml-4m checkout> python tools/bench_phases_ml4m.py [--runs 7] [--threads 2]
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

from fourm.models.fm_utils import Block, DecoderBlock, LayerNorm  # noqa: E402

ARCH = dict(qkv_bias=False, proj_bias=False, mlp_bias=False,
            norm_layer=partial(LayerNorm, eps=1e-6, bias=False), act_layer=nn.SiLU, gated_mlp=True)


def time_phase(runs, blocks, inp, fn):
    """Median (forward, backward) seconds, summed over the blocks."""
    fwd, bwd = [], []
    for run in range(runs + 1):
        tf = tb = 0.0
        for i in range(blocks):
            x = inp.detach().clone().requires_grad_(True)
            t0 = time.perf_counter()
            y = fn(i, x)
            t1 = time.perf_counter()
            y.sum().backward()
            t2 = time.perf_counter()
            tf += t1 - t0
            tb += t2 - t1
        if run > 0:
            fwd.append(tf)
            bwd.append(tb)
    return statistics.median(fwd), statistics.median(bwd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--inputs", type=int, default=128)
    ap.add_argument("--targets", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dim, heads, depth = 256, 8, 6
    b, n, m = args.batch, args.inputs, args.targets
    enc = [Block(dim, heads, mlp_ratio=4.0, **ARCH) for _ in range(depth)]
    dec = [DecoderBlock(dim, heads, mlp_ratio=4.0, **ARCH) for _ in range(depth)]
    x = torch.randn(b, n, dim)
    y = torch.randn(b, m, dim)
    context = torch.randn(b, n, dim)
    sa_mask = torch.rand(b, m, m) < 0.5  # True = may not attend, as ml-4m's masks

    rows = [
        ("encoder self-attention", time_phase(args.runs, depth, x, lambda i, x: x + enc[i].attn(enc[i].norm1(x)))),
        ("encoder MLP", time_phase(args.runs, depth, x, lambda i, x: x + enc[i].mlp(enc[i].norm2(x)))),
        ("decoder self-attention",
         time_phase(args.runs, depth, y, lambda i, y: y + dec[i].self_attn(dec[i].norm1(y), sa_mask))),
        ("decoder cross-attention",
         time_phase(args.runs, depth, y,
                    lambda i, y: y + dec[i].cross_attn(dec[i].query_norm(y), dec[i].context_norm(context)))),
        ("decoder MLP", time_phase(args.runs, depth, y, lambda i, y: y + dec[i].mlp(dec[i].norm2(y)))),
    ]
    print(f"ml-4m {os.environ['FOURM_REF']}: torch {torch.__version__}, {args.threads} threads; "
          f"batch {b}, {n} input + {m} target tokens")
    print(f"{'phase (ms, median)':<34} {'forward':>10} {'backward':>10}")
    sf = sb = 0.0
    for name, (f, bk) in rows:
        print(f"{name:<34} {f * 1e3:>10.1f} {bk * 1e3:>10.1f}")
        sf += f
        sb += bk
    print(f"{'blocks in all':<34} {sf * 1e3:>10.1f} {sb * 1e3:>10.1f}")
    print("load average", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
