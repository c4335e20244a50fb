"""Benchmark: capture to disk vs the bare forward pass, and peak memory as the prompt count grows.

Workload: every layer's ``blocks.{l}.hook_resid_post`` plus every layer's attention pattern
(``blocks.{l}.attn.hook_pattern``), streamed to safetensors shards with ``capture(..., out=DIR)``.

1. Throughput ratio = (prompts/s of capture to disk) / (prompts/s of the bare forward pass
   ``model(tokens, attention_mask=...)`` on the same padded batches), measured in one process,
   alternating the two and keeping the best of ``--repeats`` runs of each; also by process CPU
   time (``time.process_time``), which a shared, overloaded machine distorts far less.
   Goal: >= 0.8. Note: capture stops the pass once every requested hook has fired, so a capture
   of block hooks skips the final norm and the unembedding that the bare pass computes.
2. Peak RSS: a fresh subprocess per setting loads the model, warms up, then samples its RSS every
   10 ms during the capture; reported is peak − RSS before the capture, for N and 10·N prompts,
   on disk (goal: flat) and in memory (grows with N, for contrast).

Usage::

    .venv/bin/python benchmarks/bench_capture.py            # N = 8 and 80 prompts
    .venv/bin/python benchmarks/bench_capture.py --n 16 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HOOKS = ["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"]
WORDS = ("the cat dog house river mountain went saw gave a to of and in on under over quickly slowly "
         "Mary John store park drink book red blue green small large old new city garden friend").split()


def make_prompts(n: int, seed: int = 0, min_words: int = 8, max_words: int = 24) -> list[str]:
    """``n`` deterministic prompts of varied length."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(min_words, max_words)
        out.append(" ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + ".")
    return out


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child(n: int, mode: str, batch_size: int, seed: int) -> dict:
    """Run in a subprocess: peak RSS increase during one capture of ``n`` prompts."""
    import gc

    import torch

    from interp import capture, load_model

    torch.manual_seed(seed)
    model = load_model("smollm2-135m")
    prompts = make_prompts(n, seed)
    # warm-up on the longest prompts: the forward pass's transient memory depends on the widest
    # padded batch, not on the number of prompts
    capture(model, sorted(prompts, key=len)[-batch_size:], HOOKS, batch_size=batch_size)
    gc.collect()
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.01)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        store = capture(model, prompts, HOOKS, batch_size=batch_size, out=(d if mode == "disk" else None))
        dt = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) if mode == "disk" else None
        stop.set()
        th.join()
        peak[0] = max(peak[0], _rss())
        assert store.n_examples == n
    return {"n": n, "mode": mode, "seconds": dt, "rss_base_mb": base / 2**20,
            "peak_increase_mb": (peak[0] - base) / 2**20, "disk_mb": size / 2**20 if size else None,
            "tokens": sum(store.lengths)}


def throughput(n: int, batch_size: int, repeats: int, seed: int) -> dict:
    """Best-of-``repeats`` seconds for the bare forward and for capture-to-disk, same process."""
    import torch

    from interp import capture, load_model, tokenize

    model = load_model("smollm2-135m")
    prompts = make_prompts(n, seed)
    batches = [tokenize(model, prompts[s: s + batch_size]) for s in range(0, n, batch_size)]

    def bare() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for b in batches:
                model(b.tokens, attention_mask=b.attention_mask)
        return time.perf_counter() - t0, time.process_time() - c0

    def cap() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as d:
            t0, c0 = time.perf_counter(), time.process_time()
            capture(model, prompts, HOOKS, batch_size=batch_size, out=d)
            return time.perf_counter() - t0, time.process_time() - c0

    bare()  # warm-up
    tb, tc = [], []
    for _ in range(repeats):
        tb.append(bare())
        tc.append(cap())
    best_b, best_c = min(t for t, _ in tb), min(t for t, _ in tc)
    cpu_b, cpu_c = min(c for _, c in tb), min(c for _, c in tc)
    return {"n": n, "batch_size": batch_size, "bare_s": best_b, "capture_s": best_c,
            "ratio": best_b / best_c, "bare_cpu_s": cpu_b, "capture_cpu_s": cpu_c, "ratio_cpu": cpu_b / cpu_c,
            "bare_all": tb, "capture_all": tc, "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8, help="small prompt count; the large one is 10x")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="disk,memory", help="stores to measure RSS for")
    ap.add_argument("--skip-throughput", action="store_true", help="only the peak-RSS table")
    ap.add_argument("--skip-rss", action="store_true", help="only the throughput ratio")
    ap.add_argument("--child", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.batch_size, args.seed)))
        return

    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}", flush=True)
    tp = None if args.skip_throughput else throughput(args.n * 2, args.batch_size, args.repeats, args.seed)
    print(json.dumps(tp), flush=True)
    rows = []
    for n, mode in [] if args.skip_rss else [
            (n, mode) for mode in args.modes.split(",") for n in (args.n, 10 * args.n)]:
        r = subprocess.run([sys.executable, __file__, "--child", str(n), mode, "--batch-size", str(args.batch_size),
                            "--seed", str(args.seed)], capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)

    if tp is not None:
        print("\n| measure | value |\n| --- | --- |")
        print(f"| bare forward, {tp['n']} prompts (batch {tp['batch_size']}) | {tp['bare_s']:.2f} s |")
        print(f"| capture to disk, same prompts | {tp['capture_s']:.2f} s |")
        print(f"| throughput ratio capture/bare, wall clock (goal >= 0.8) | **{tp['ratio']:.2f}** |")
        print(f"| same, by process CPU time (robust on a shared machine) | **{tp['ratio_cpu']:.2f}** |")
    if not rows:
        return
    print("\n| prompts | store | tokens | time (s) | peak RSS increase (MiB) | on disk (MiB) |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        disk = f"{r['disk_mb']:.1f}" if r["disk_mb"] is not None else "–"
        print(f"| {r['n']} | {r['mode']} | {r['tokens']} | {r['seconds']:.1f} | {r['peak_increase_mb']:.1f} | {disk} |")


if __name__ == "__main__":
    main()
