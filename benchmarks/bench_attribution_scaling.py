"""Benchmark: streamed attribution at long context — time and peak memory vs one forward+backward.

Usage::

    .venv/bin/python benchmarks/bench_attribution_scaling.py [--tokens 32 128 512 2048]
        [--ig-steps 5] [--k 100000] [--repeats 2] [--counterfactual half|all] [--deltas keep|recompute]
        [--out results/attribution_scaling.json]

SmolLM2-135M, batch 1, random-token prompts with BOS, counterfactual = the second half of the
prompt resampled (``--counterfactual all``: every token after BOS), metric = one logit at the last
position. For each length T, in one process:

* baseline: one forward + backward of the bridge's HF model (eager attention) on the clean batch
  (gradient w.r.t. the input embeddings only), time and peak extra RSS;
* EAP and EAP-IG (m steps) at granularity ``none``, ``span`` (8 equal spans over the prompt)
  and ``position`` with a top-k store (k edges);
* each run's time as a ratio to the baseline (min over ``--repeats``; the baseline is measured
  before and again after the runs of each length and the faster is used; other processes share
  the CPUs, so times are noisy) and its peak extra RSS (sampled every 10 ms above the RSS before
  the run) as a ratio to the baseline's, next to :func:`circuits.estimate_memory`'s prediction.
  The script re-executes itself with ``MALLOC_MMAP_THRESHOLD_=65536`` (unless set) so that RSS
  tracks live tensors rather than glibc's cached heap from earlier runs in the process.

Goals (issue 13): EAP ≤ 3× and EAP-IG ≤ 8× the baseline time; peak extra ≤ 1.5× the
baseline's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if __name__ == "__main__" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
    # glibc serves allocations ≥ 64 KiB from mmap and unmaps them when freed, so RSS follows the
    # live tensors of every run (baseline and attribution alike) instead of the heap's cache of
    # earlier runs; set MALLOC_MMAP_THRESHOLD_ yourself to measure otherwise
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})

import psutil  # noqa: E402
import torch  # noqa: E402


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover - not glibc
        pass


class Peak:
    """Peak RSS above the RSS at entry while the block runs (sampled every 10 ms)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()

    def __enter__(self) -> "Peak":
        gc.collect()
        _trim()  # hand freed heap back to the OS so RSS starts from what is really live
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
    def extra(self) -> int:
        return self.peak - self.base


PAPER_MODELS = {
    # public configs (config.json of meta-llama/Meta-Llama-3-8B and google/gemma-2-9b)
    "Llama-3-8B": dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       hidden_size=4096, head_dim=128, intermediate_size=14336, vocab_size=128256,
                       n_params=8_030_000_000),
    "Gemma-2-9B": dict(num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8,
                       hidden_size=3584, head_dim=256, intermediate_size=14336, vocab_size=256000,
                       n_params=9_240_000_000, attn_logit_softcapping=50.0),
}


def paper_table(measured: list[dict], tflops: float = 400.0, gpu_gib: float = 80.0) -> str:
    """Predicted time and memory of EAP / EAP-IG on the PAPER_MODELS at 128 / 1k / 8k tokens (batch
    1, bf16, one GPU), from :func:`circuits.estimate_memory` (shapes only) and the time ratios
    measured here (nearest measured length). fwd+bwd time = (6·N·T + 12·L·H·e·T²) FLOPs at
    ``tflops`` TFLOP/s — an assumption, not a measurement."""
    from circuits.memory import estimate_memory, shapes_from_config

    def ratio(run: str, T: int) -> float:
        rows = [r for r in measured if r["run"].startswith(run) and "ratio_time" in r]
        if not rows:
            return float("nan")
        return min(rows, key=lambda r: abs(r["T"] - T))["ratio_time"]

    lines = ["| model | tokens | fwd+bwd (pred.) | EAP time (pred.) | EAP-IG m=5 (pred.) | peak EAP none/span "
             "(deltas kept / recomputed) | peak EAP-IG (kept / recomputed) | attention in the attributed forward | "
             "position graph dense | store needed on one 80 GB GPU | 80 GB GPUs with device_map (EAP none / EAP-IG; "
             "not supported yet) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, cfg in PAPER_MODELS.items():
        sh = shapes_from_config(cfg)
        for T in (128, 1024, 8192):
            flops = 6 * cfg["n_params"] * T + 12 * sh["L"] * sh["H"] * sh["e"] * T * T
            fb = flops / (tflops * 1e12)
            e_none = estimate_memory(sh, T, 1, granularity="none")
            e_none_r = estimate_memory(sh, T, 1, granularity="none", deltas="recompute")
            e_ig = estimate_memory(sh, T, 1, granularity="none", method="eap-ig")
            # EAP-IG under a budget: one point per pass, deltas recomputed (what plan_attribution picks last)
            e_ig_r = estimate_memory(sh, T, 1, granularity="none", method="eap-ig", ig_chunk=1, deltas="recompute")
            attn = "eager (soft-capped scores)" if sh.get("softcap") else "fused (SDPA)"
            e_dense = estimate_memory(sh, T, 1, granularity="position", store="dense")
            dense = e_dense["graph"]
            e_top = estimate_memory(sh, T, 1, granularity="position", store="topk", k=100_000)
            e_top_r = estimate_memory(sh, T, 1, granularity="position", store="topk", k=100_000,
                                      deltas="recompute")
            free = gpu_gib * 2**30 - sh["weights"]
            if e_dense["peak"] <= free:
                store = "dense"
            elif e_top["peak"] <= free:
                store = f"top-k (dense graph {dense / 2**30:.0f} GiB: disk shards or top-k)"
            elif e_top_r["peak"] <= free:
                store = "top-k, deltas recomputed (`max_memory=` picks it)"
            else:
                store = "does not fit at batch 1 (device_map over GPUs not supported yet)"
            gib = lambda x: f"{x / 2**30:.1f} GiB"  # noqa: E731
            # layer-split (device_map): weights, activations, gradients and deltas all divide by
            # layer; ~5 % headroom per GPU for the per-layer work that cannot be split
            n_gpu = lambda need: -(-int(need) // int(0.95 * gpu_gib * 2**30))  # noqa: E731
            lines.append(f"| {name} | {T} | {fb:.2f} s | {fb * ratio('eap none', T):.2f} s | "
                         f"{fb * ratio('eap-ig none', T):.2f} s | {gib(e_none['peak'])} / {gib(e_none_r['peak'])} | "
                         f"{gib(e_ig['peak'])} / {gib(e_ig_r['peak'])} | {attn} | "
                         f"{gib(dense)} | {store} | {n_gpu(e_none['peak'] + sh['weights'])} / "
                         f"{n_gpu(e_ig['peak'] + sh['weights'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, nargs="+", default=[32, 128, 512, 2048])
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--k", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["eap", "eap-ig"])
    ap.add_argument("--granularities", nargs="+", default=["none", "span", "position"],
                    help="none, span (8 spans), position (top-k store, --k) or dense (position "
                         "granularity, dense graph: its size is reported and the memory goal is "
                         "1.5× the baseline's peak + the graph's own size)")
    ap.add_argument("--counterfactual", choices=["half", "all"], default="half",
                    help="resample the second half of the prompt (the issue's setting: clean and "
                         "counterfactual share their first half) or every token after BOS (no "
                         "shared prefix: crossing blocks cannot skip any rows)")
    ap.add_argument("--deltas", choices=["keep", "recompute"], default="keep",
                    help="recompute: run with max_memory = the estimate with sender deltas remade per "
                         "receiver layer, below the kept-deltas estimate (what the plan picks where "
                         "keeping them does not fit)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "attribution_scaling.json"))
    ap.add_argument("--paper", default=None,
                    help="print the predicted table for Llama-3-8B / Gemma-2-9B from this results JSON and exit")
    args = ap.parse_args()
    if args.paper:
        print(paper_table(json.loads(Path(args.paper).read_text())["rows"]))
        return

    from circuits import attribute, estimate_memory
    from circuits.metrics import Metric
    from interp import load_model
    from interp.schema import SchemaSpans

    torch.manual_seed(0)
    model = load_model(args.model)
    hf = model.original_model
    for p in hf.parameters():
        p.requires_grad_(False)
    V = hf.config.vocab_size
    bos = model.tokenizer.bos_token_id
    rows = []
    # warm-up (one-time allocations and lazy initialisation stay out of every measurement)
    w = torch.full((1, 8), bos)
    emb = hf.get_input_embeddings()(w).detach().requires_grad_(True)
    with torch.enable_grad():
        hf(inputs_embeds=emb).logits[0, -1, 0].backward()
    attribute(model, w, w.clone(), Metric(lambda lg, b: lg[:, -1, 0], "warmup"), granularity="none")

    for T in args.tokens:
        g = torch.Generator().manual_seed(T)
        clean = torch.randint(100, V, (1, T), generator=g)
        clean[:, 0] = bos
        corrupt = clean.clone()
        c0 = T // 2 if args.counterfactual == "half" else 1
        corrupt[:, c0:] = torch.randint(100, V, (1, T - c0), generator=g)
        target = int(torch.randint(100, V, (1,), generator=g))

        def one_logit(logits: torch.Tensor, batch) -> torch.Tensor:
            return logits[torch.arange(logits.shape[0]), batch.last, target]

        met = Metric(one_logit, "one_logit")
        bounds = torch.linspace(0, T, 9).round().long().tolist()
        spans = SchemaSpans(names=[f"s{i}" for i in range(8)],
                            spans=[[(bounds[i], bounds[i + 1]) for i in range(8)]], lengths=[T],
                            prepend_bos=True, prompts=[""], str_tokens=[[""] * T])

        def baseline() -> None:
            emb = hf.get_input_embeddings()(clean).detach().requires_grad_(True)
            with torch.enable_grad():
                logits = hf(inputs_embeds=emb).logits
                logits[0, -1, target].backward()

        def measure_baseline() -> tuple[float, int]:
            times, peaks = [], []
            for _ in range(args.repeats):
                with Peak() as pk:
                    baseline()
                times.append(pk.seconds)
                peaks.append(pk.extra)
            return min(times), min(peaks)

        base_t, base_m = measure_baseline()
        print(f"T={T}: fwd+bwd {base_t:.3f}s, +{base_m / 2**20:.0f} MiB", flush=True)
        base_row = {"T": T, "run": "baseline fwd+bwd", "seconds": base_t, "extra_bytes": base_m,
                    "seconds_before": base_t}
        rows.append(base_row)
        first_row = len(rows)
        for method in args.methods:
            for gran in args.granularities:
                dense = gran == "dense"
                gran = "position" if dense else gran
                kw = dict(method=method, ig_steps=args.ig_steps, granularity=gran, batch_size=1)
                if gran == "span":
                    kw["schema"] = spans
                if gran == "position" and not dense:
                    kw.update(store="topk", k=args.k)
                est = estimate_memory(model, T, 1, granularity=gran, method=method,
                                      ig_steps=args.ig_steps, store=kw.get("store", "dense"),
                                      k=args.k, n_positions=8 if gran == "span" else None,
                                      **({"ig_chunk": 1} if args.deltas == "recompute" else {}),
                                      deltas=args.deltas)
                if args.deltas == "recompute":
                    kw["max_memory"] = est["peak"]
                reps = args.repeats if T <= 512 else 1
                times, peaks = [], []
                graph_bytes = 0
                for _ in range(reps):
                    with Peak() as pk:
                        graph = attribute(model, clean, corrupt, met, **kw)
                    times.append(pk.seconds)
                    peaks.append(pk.extra)
                    if dense:  # the dense graph's own tensors (what the result holds)
                        graph_bytes = sum(t.untyped_storage().nbytes() for t in
                                          {id(x): x for x in vars(graph).values()
                                           if isinstance(x, torch.Tensor)}.values())
                    del graph
                    gc.collect()
                t, mem = min(times), min(peaks)
                label = "position dense" if dense else gran + (f" top-k {args.k}" if gran == "position" else "")
                row = {"T": T, "run": f"{method} {label}"
                       + (" deltas recomputed" if args.deltas == "recompute" else ""),
                       "seconds": t, "ratio_time": t / base_t, "extra_bytes": mem,
                       "ratio_memory": mem / max(base_m, 1), "estimate_bytes": est["peak"],
                       "estimate_over_measured": est["peak"] / max(mem, 1)}
                if dense:
                    row["graph_bytes"] = graph_bytes
                row["load_avg_1min"] = os.getloadavg()[0]  # other processes share the CPUs
                rows.append(row)
                print(f"  {row['run']:<32} {t:8.2f}s {row['ratio_time']:5.2f}x  +{mem / 2**20:7.0f} MiB "
                      f"({row['ratio_memory']:.2f}x)  estimate {est['peak'] / 2**20:7.0f} MiB "
                      f"({row['estimate_over_measured']:.2f} of measured)"
                      + (f"  graph {graph_bytes / 2**20:.0f} MiB" if dense else ""), flush=True)
        # the baseline again after the runs: the ratios use the faster of the two measurements
        # (a baseline slowed by the machine would flatter every ratio)
        after_t, after_m = measure_baseline()
        base_row.update(seconds_after=after_t, seconds=min(base_t, after_t), extra_bytes=min(base_m, after_m))
        print(f"T={T}: fwd+bwd again {after_t:.3f}s (ratios use {base_row['seconds']:.3f}s)", flush=True)
        for r in rows[first_row:]:
            r["ratio_time"] = r["seconds"] / base_row["seconds"]
            r["ratio_memory"] = r["extra_bytes"] / max(base_row["extra_bytes"], 1)
            if "graph_bytes" in r:  # goal: ≤ 1.5× the baseline + the graph's own size
                r["ratio_memory_less_graph"] = (r["extra_bytes"] - r["graph_bytes"]) / max(base_row["extra_bytes"], 1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model": args.model, "threads": torch.get_num_threads(),
                                              "counterfactual": args.counterfactual,
                                              "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
