"""Benchmark: positional EAP / EAP-IG with crossing edges vs forward+backward and exact patching.

Usage::

    .venv/bin/python benchmarks/bench_attribution.py [--n 8] [--ig-steps 5] [--patch-runs 3]

On SmolLM2-135M with an IOI batch (``circuits.tasks.ioi``), in one process:

* baseline: one forward + backward of the bridge's HF model on the clean batch (metric on the
  logits, gradients w.r.t. the weights disabled, w.r.t. the input embeddings);
* EAP (granularity ``position`` and ``span``, crossing edges included) — goal ≤ 4× baseline;
* EAP-IG with m steps — goal ≤ (m + 3)× baseline;
* exact node patching of every (sender, position) pair, one ``PatchableModel.run`` per pair:
  ``--patch-runs`` of them are timed and the total extrapolated — goal EAP ≥ 100× faster;
* peak resident memory of each phase (sampled every 10 ms with psutil, above the model's RSS).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import torch  # noqa: E402


class Peak:
    """Peak RSS above the starting RSS while the block runs."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0

    def __enter__(self) -> "Peak":
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.stop = False

        def poll() -> None:
            while not self.stop:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                time.sleep(0.01)

        self.t = threading.Thread(target=poll, daemon=True)
        self.t.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--patch-runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2,
                    help="repeats of the baseline and of each attribution (min time taken)")
    args = ap.parse_args()

    from circuits import attribute, tasks
    from circuits.attribution import patchable
    from circuits.metrics import MetricBatch
    from interp import load_model

    model = load_model(args.model)
    pm = patchable(model)
    task = tasks.ioi(model, args.n, seed=0)
    toks, mask = task.clean.tokens, task.clean.attention_mask
    n, P = toks.shape
    hf = model.original_model
    for prm in hf.parameters():
        prm.requires_grad_(False)
    mb = MetricBatch.from_mask(mask)

    def fwd_bwd() -> None:
        emb = hf.get_input_embeddings()(toks).detach().requires_grad_(True)
        out = hf(inputs_embeds=emb, attention_mask=mask).logits
        task.metric(out, mb).sum().backward()

    def fwd() -> None:
        with torch.no_grad():
            hf(input_ids=toks, attention_mask=mask)

    fwd()  # warm-up
    base = []
    for _ in range(args.repeats):
        with Peak() as pk:
            fwd_bwd()
        base.append(pk.seconds)
    t_fb, mem_fb = min(base), pk.mib
    fw = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fwd()
        fw.append(time.perf_counter() - t0)
    t_f = min(fw)
    rows = []
    for label, kw in [("EAP position", dict(method="eap", granularity="position")),
                      ("EAP span", dict(method="eap", granularity="span")),
                      (f"EAP-IG m={args.ig_steps} position",
                       dict(method="eap-ig", ig_steps=args.ig_steps, granularity="position"))]:
        secs, mibs = [], []
        for _ in range(args.repeats):  # same statistic as the baseline: min time, max memory
            with Peak() as pk:
                g = attribute(model, task, batch_size=n, **kw)
            secs.append(pk.seconds)
            mibs.append(pk.mib)
        goal = 4.0 if kw["method"] == "eap" else args.ig_steps + 3.0
        rows.append((label, min(secs), min(secs) / t_fb, goal, max(mibs), g.n_edges()))
        if label == "EAP position":
            t_eap = min(secs)
    # exact node patching: one run per (sender, position)
    acts_x = pm.activations(task.corrupt.tokens, task.corrupt.attention_mask)
    S, R = len(pm.senders), len(pm.receivers)
    keep = torch.ones(n, P, S, R, dtype=torch.bool)
    times = []
    with Peak() as pk_patch:
        for i in range(args.patch_runs):
            s = 1 + (i * 37) % (S - 1)
            p = (i * 5) % P
            keep[:, p, s] = False
            t0 = time.perf_counter()
            pm.run(toks, mask, ablated=acts_x, keep=keep)
            times.append(time.perf_counter() - t0)
            keep[:, p, s] = True
    t_run = min(times)
    n_runs = S * P
    t_exact = t_run * n_runs
    print(f"\nmodel {args.model}, IOI batch {n}×{P} tokens, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"baseline: forward {t_f:.2f} s, forward+backward {t_fb:.2f} s (+{mem_fb:.0f} MiB)\n")
    print("| run | seconds | × fwd+bwd | goal | peak extra RSS (MiB) | abstract edges |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, sec, ratio, goal, mib, ne in rows:
        print(f"| {label} | {sec:.1f} | {ratio:.2f} | ≤ {goal:.0f} | {mib:.0f} | {ne:,} |")
    print(f"| exact node patching, all {S}×{P} = {n_runs} (sender, position) nodes "
          f"(extrapolated from {args.patch_runs} runs of {t_run:.2f} s) | {t_exact:.0f} | "
          f"{t_exact / t_fb:.0f} | — | {pk_patch.mib:.0f} | — |")
    print(f"\nEAP (position, all edges incl. crossing) is {t_exact / t_eap:.0f}× faster than exact "
          f"node patching (goal ≥ 100×).")


if __name__ == "__main__":
    main()
