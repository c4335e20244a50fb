"""Benchmark: every head score + every sink statistic of SmolLM2 on 64 prompts × 64 tokens,
against the bare forward pass on the same prompts (goal: ≤ 1.5× its time).

Measured (interleaved, ``--reps`` rounds, best and median reported):

* ``bare forward (logits)``: ``model(tokens)`` in mini-batches — the reference;
* ``bare forward (no unembed)``: ``return_type=None`` — the same work as ours minus the hooks;
* ``scan.scan``: one streaming pass computing the previous/self/first/duplicate/induction scores,
  A(Δ) for every Δ, α_k for every key and prompt, value drains (‖v W_O‖ per head and position),
  residual norms/peaks and massive activations;
* with ``--controls``: ``heads.positional_heads`` with the random-token and repeated-random
  controls (three passes) and ``sinks.sink_analysis`` separately.

Usage: ``.venv/bin/python benchmarks/bench_sinks_heads.py [--reps 3] [--batch-size 16] [--controls]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def make_batch(model, n: int = 64, length: int = 64):
    from interp._attnstats import PromptBatch
    from interp.prompts import DEFAULT_PROMPTS
    from interp.prompts import DOMAINS
    from interp.tokens import _display, bos_token_id

    text = " ".join(DEFAULT_PROMPTS + DOMAINS["prose"] + DOMAINS["code"])
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = ids * (1 + (n * 5 + length) // len(ids))
    rows = [[bos_token_id(model)] + stream[5 * i: 5 * i + length - 1] for i in range(n)]
    toks = torch.tensor(rows)
    strs = [[_display(t) for t in model.tokenizer.convert_ids_to_tokens(r)] for r in rows]
    return PromptBatch(toks, torch.ones_like(toks), [length] * n, strs, True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--controls", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared, oversubscribed box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from interp import heads, load_model, scan, sinks

    model = load_model("smollm2-135m")
    batch = make_batch(model, args.n, args.length)
    bs = args.batch_size

    def bare(return_type):
        with torch.no_grad():
            for i in range(0, len(batch), bs):
                model(batch.tokens[i:i + bs], return_type=return_type)

    runs = {
        "bare forward (logits)": lambda: bare("logits"),
        "bare forward (no unembed)": lambda: bare(None),
        "scan.scan (all head scores + sink stats, 1 pass)": lambda: scan.scan(model, batch, batch_size=bs),
    }
    if args.controls:
        runs["heads.positional_heads (+ random & repeated controls)"] = lambda: heads.positional_heads(
            model, batch, batch_size=bs)
        runs["sinks.sink_analysis"] = lambda: sinks.sink_analysis(model, batch, batch_size=bs)

    bare("logits")  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.reps):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    base = min(times["bare forward (logits)"])
    base_med = statistics.median(times["bare forward (logits)"])
    print(f"\nSmolLM2-135M, {args.n} prompts x {args.length} tokens (BOS included), batch {bs}, "
          f"{torch.get_num_threads()} threads, {args.reps} interleaved reps\n")
    print("| run | best s | median s | ratio (best) | ratio (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, ts in times.items():
        b, m = min(ts), statistics.median(ts)
        print(f"| {name} | {b:.2f} | {m:.2f} | {b / base:.2f}x | {m / base_med:.2f}x |")
    r = scan.scan(model, batch, batch_size=bs)
    print(f"\nSink_0^0.3 = {r.sinks.sink_rate(0):.3f}; massive layers = {r.sinks.massive.massive_layers()}; "
          f"top prev-token heads = {r.heads.top(3, 'previous_token')}")


if __name__ == "__main__":
    main()
