"""Engine parity: every analysis's JSON numbers on the bundled SmolLM2 with small inputs and fixed
seeds, to compare two checkouts bit for bit (e.g. before and after a refactor of the engine).

Usage (from each checkout's root, with its own venv)::

    .venv/bin/python benchmarks/engine_parity.py run OUT.json
    python benchmarks/engine_parity.py diff A.json B.json     # IDENTICAL or the differing leaves
"""
import hashlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(path: str) -> None:
    import torch

    import interp
    import probes
    from interp import heads, neurons, sinks
    from interp.atlas import _causal as C
    from interp.rope import band_ablation, frequency_usage, shift_invariance
    from interp.scan import scan

    torch.manual_seed(0)
    m = interp.load_model("smollm2-135m")
    P = ["The cat sat on the mat and looked at the door.", "In 1492 Columbus sailed the ocean blue.",
         "def add(a, b):\n    return a + b", "Paris is the capital of France, and Rome is the capital of Italy.",
         "one two three four five six seven eight"]
    out = {}

    def j(r):
        return json.loads(json.dumps(r.to_json(), sort_keys=True, default=str))

    out["sink_analysis"] = j(sinks.sink_analysis(m, P, batch_size=2))
    out["massive"] = j(sinks.massive_activations(m, P, batch_size=2))
    out["repeated_token_sink"] = j(sinks.repeated_token_sink(m, "the", length=12))
    out["positional_heads"] = j(heads.positional_heads(m, P, batch_size=2, random_control=True, seed=3))
    r = scan(m, P, batch_size=2, random_control=True, seed=1)
    out["scan_heads"], out["scan_sinks"] = j(r.heads), j(r.sinks)
    toks, pat = heads.attention_patterns(m, P[0], ["L0H1", "L5H3"])
    out["attention_patterns"] = [toks, pat.tolist()]
    out["neurons"] = j(neurons.positional_neurons(m, P, batch_size=2, n_boot=3, seed=2))
    out["neurons_q"] = j(neurons.positional_neurons(m, P, batch_size=2, rule="quantile", layers=[0, 3]))
    out["rope_usage"] = j(frequency_usage(m, P[:3], batch_size=2))
    out["rope_ablation"] = j(band_ablation(m, P[:3], batch_size=2))
    out["rope_shift"] = j(shift_invariance(m, P[:2], batch_size=2))
    for side in ("right", "left"):
        st = interp.capture(m, P, ["blocks.*.hook_resid_post", "blocks.2.attn.hook_pattern"], batch_size=2,
                            padding_side=side)
        h = hashlib.sha256()
        for i in range(st.n_examples):
            for k in st.hooks:
                h.update(st.get(k, i).contiguous().numpy().tobytes())
        out[f"capture_{side}"] = h.hexdigest()
    d = probes.collect(m, P, batch_size=2)
    out["probe_collect"] = {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in d.features.items()}
    out["probe_keys"] = [d.groups.tolist(), d.positions.tolist(), d.tokens.tolist()]
    dom = {"prose": ["The cat sat on the mat.", "In 1492 Columbus sailed the ocean blue, they say."],
           "code": ["def f(x):\n    return x + 1", "for i in range(10): print(i)"]}
    for method in ("zero", "sink"):
        out[f"active_dormant_{method}"] = j(sinks.active_dormant(m, dom, layers=[0, 7], batch_size=2, method=method))
    t = interp.tokenize(m, ["one two three four five six", "a b c d e f"], prepend_bos=True).tokens
    out["domain_losses"] = C.domain_losses(m, t, {"all": torch.ones_like(t, dtype=torch.bool)}, [C.zero_head_hook(2, 3)])
    with open(path, "w") as f:
        json.dump(out, f, sort_keys=True)
    print("wrote", path, sorted(out))


def diff(a_path: str, b_path: str) -> int:
    a, b = json.load(open(a_path)), json.load(open(b_path))

    def walk(x, y, path, out):
        if type(x) is not type(y):
            out.append((path, "type"))
        elif isinstance(x, dict):
            for k in sorted(set(x) | set(y)):
                if k not in x or k not in y:
                    out.append((f"{path}.{k}", "missing"))
                else:
                    walk(x[k], y[k], f"{path}.{k}", out)
        elif isinstance(x, list):
            if len(x) != len(y):
                out.append((path, "len"))
            else:
                for i, (u, v) in enumerate(zip(x, y)):
                    walk(u, v, f"{path}[{i}]", out)
        elif x != y and not (x != x and y != y):  # NaN == NaN here
            out.append((path, x, y))

    bad = 0
    for k in sorted(set(a) | set(b)):
        out: list = []
        walk(a.get(k), b.get(k), k, out)
        bad += len(out)
        print(f"{k:22s} {'IDENTICAL' if not out else f'{len(out)} differences, e.g. {out[:3]}'}")
    print("TOTAL differing leaves:", bad)
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        run(sys.argv[2])
    elif sys.argv[1:2] == ["diff"]:
        sys.exit(diff(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
