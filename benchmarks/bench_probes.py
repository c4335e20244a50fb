"""Benchmark: probes' torch logistic / ridge probes vs scikit-learn on the same features.

Features: a synthetic stand-in for residual-stream activations ([rows, dim], float32): class
means plus correlated Gaussian noise (random mixing matrix, anisotropic scales) and a few
"massive" dimensions with a large offset, like real residual streams. Rows are split 80/20.

Both sides solve the same objective on the same standardised features:
  logistic: sklearn ``LogisticRegression(C=1)`` (lbfgs, its defaults tol=1e-4, max_iter=100),
            ours ``fit_logistic(l2 = 1 / (C * n_train))`` (defaults tol=1e-5, max_iter=300);
  ridge:    sklearn ``Ridge(alpha=1)``, ours ``fit_ridge(l2 = 1 / n_train)``.
scikit-learn's time includes its ``StandardScaler`` (our fits standardise internally).

Usage::

    .venv/bin/python benchmarks/bench_probes.py --rows 50000 --dim 576 --classes 16
    .venv/bin/python benchmarks/bench_probes.py --rows 200000   # the issue's size (~minutes)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probes  # noqa: E402


def make_features(rows: int, dim: int, classes: int, seed: int = 0, separation: float = 0.04) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (rows,), generator=g)
    means = torch.randn(classes, dim, generator=g) * separation
    mix = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
    scales = torch.rand(dim, generator=g) * 2 + 0.1
    x = (means[y] + torch.randn(rows, dim, generator=g) @ mix) * scales
    x[:, :3] += torch.tensor([40.0, -25.0, 60.0])  # massive-activation-like offsets
    return x.float().contiguous(), y


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--separation", type=float, default=0.04,
                    help="class-mean scale in whitened units (0.04: ~99%% accuracy, 0.01: harder)")
    ap.add_argument("--sk-max-iter", type=int, default=100,
                    help="scikit-learn LogisticRegression max_iter (its default: 100; raise it to compare converged fits)")
    ap.add_argument("--sk-tol", type=float, default=1e-4, help="scikit-learn LogisticRegression tol (default 1e-4)")
    ap.add_argument("--repeats", type=int, default=1, help="best-of-N timings")
    ap.add_argument("--skip", default="", help="comma list of: multinomial,binary,ridge")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="limit torch and scikit-learn's BLAS/OpenMP pools to N threads (threadpoolctl)")
    args = ap.parse_args()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    x, y = make_features(args.rows, args.dim, args.classes, separation=args.separation)
    n_tr = int(0.8 * args.rows)
    xtr, xte, ytr, yte = x[:n_tr], x[n_tr:], y[:n_tr], y[n_tr:]
    xtr_np, xte_np = xtr.numpy(), xte.numpy()
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    print(f"# probes benchmark: {args.rows} rows x {args.dim} dims, {args.classes} classes, separation {args.separation}, "
          f"torch threads={torch.get_num_threads()}, device={args.device}", flush=True)

    def best(fn):
        outs = [timed(fn) for _ in range(args.repeats)]
        return outs[0][0], min(t for _, t in outs)

    tasks = []
    if "multinomial" not in skip:
        tasks.append(("logistic multinomial", ytr, yte))
    if "binary" not in skip:
        tasks.append(("logistic binary", (ytr < args.classes // 2).long(), (yte < args.classes // 2).long()))
    for name, a, b in tasks:
        ours, t_ours = best(lambda: probes.fit_logistic(xtr, a, l2=1.0 / n_tr, device=args.device))
        acc_ours = float((ours.predict(xte.to(args.device)).cpu() == b).double().mean())

        def sk_fit():
            sc = StandardScaler().fit(xtr_np)
            return sc, LogisticRegression(C=1.0, max_iter=args.sk_max_iter, tol=args.sk_tol).fit(sc.transform(xtr_np), a.numpy())

        (sc, sk), t_sk = best(sk_fit)
        acc_sk = float((torch.as_tensor(sk.predict(sc.transform(xte_np))) == b).double().mean())
        rows.append((name, "accuracy", acc_ours, acc_sk, t_ours, t_sk, f"ours {ours.meta['n_iter_total']} it, sklearn {int(sk.n_iter_.max())} it (max {args.sk_max_iter})"))
        print(rows[-1], flush=True)
    if "ridge" not in skip:
        target = (x @ torch.randn(args.dim, generator=torch.Generator().manual_seed(1)) / math.sqrt(args.dim)
                  + y.float() + torch.randn(args.rows, generator=torch.Generator().manual_seed(2)))
        ttr, tte = target[:n_tr], target[n_tr:]
        ours, t_ours = best(lambda: probes.fit_ridge(xtr, ttr, l2=1.0 / n_tr, device=args.device))
        r2_ours = probes.r2_score(tte, ours.predict(xte.to(args.device)).cpu())

        def sk_ridge():
            sc = StandardScaler().fit(xtr_np)
            return sc, Ridge(alpha=1.0).fit(sc.transform(xtr_np), ttr.numpy())

        (sc, sk), t_sk = best(sk_ridge)
        r2_sk = probes.r2_score(tte, torch.as_tensor(sk.predict(sc.transform(xte_np))))
        rows.append(("ridge", "R^2", r2_ours, r2_sk, t_ours, t_sk, "closed form both"))
        print(rows[-1], flush=True)

    print()
    print(f"| task ({args.rows} x {args.dim}) | metric | probes | sklearn | probes s | sklearn s | speed-up | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, metric, a, b, ta, tb, note in rows:
        print(f"| {name} | held-out {metric} | {a:.4f} | {b:.4f} | {ta:.2f} | {tb:.2f} | {tb / ta:.1f}x | {note} |")


if __name__ == "__main__":
    main()
