"""interp.datasets: the bundled sets load, match their manifest, and cover what the report needs."""

from __future__ import annotations

import json

import pytest

from interp import datasets


def test_manifest_records_provenance_and_licence_for_every_file():
    m = datasets.manifest()
    assert m["licence"] and m["provenance"] and m["generator"].endswith("_generate.py")
    files = {p.name for p in datasets.DATA_DIR.glob("*.jsonl")}
    assert files == {e["file"] for e in m["datasets"].values()}  # no unlisted file, no missing file
    for name, e in m["datasets"].items():
        assert e["licence"] and e["description"] and e["generator"], name
        assert e["n"] == len([r for r in datasets.load(name) if set(r) != {"template"}])
    datasets.verify()


def test_prompt_set_size_domains_and_lengths():
    ps = datasets.prompts()
    assert len(ps) >= 256
    doms = {p.domain for p in ps}
    assert {"prose", "dialogue", "code", "math", "lists"} <= doms
    toks = [p.meta["tokens_smollm2"] for p in ps]
    assert min(toks) >= 16 and max(toks) >= 1024
    for d in doms:
        assert max(p.meta["tokens_smollm2"] for p in ps if p.domain == d) >= 1024, d
    assert len(datasets.prompts(domains=["code"])) == 56
    with pytest.raises(ValueError, match="no domain"):
        datasets.prompts(domains=["poetry"])


def test_generator_is_deterministic(tmp_path):
    from interp.datasets import _generate

    _generate.generate(tmp_path, tokenizer_dir=None)
    for name in ("induction.jsonl", "greater_than.jsonl", "ioi_t1.jsonl"):
        assert (tmp_path / name).read_bytes() == (datasets.DATA_DIR / name).read_bytes()
    fresh = [json.loads(s) for s in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    shipped = datasets.load("prompts")
    assert [r["text"] for r in fresh] == [r["text"] for r in shipped]


def test_ioi_sets_cover_both_orders_and_all_templates():
    from circuits.tasks.ioi import TEMPLATES

    tpls = []
    for t in range(3):
        rows = datasets.load(f"ioi-t{t}")
        tpls.append(rows[0]["template"].replace("{N1}", "{A}").replace("{N2}", "{B}"))
        ex = rows[1:]
        assert len(ex) >= 64
        assert {r["order"] for r in ex} == {"ABBA", "BABA"}
        for r in ex:
            io = r["correct"].strip()
            first = r["clean"]["N1"] if r["order"] == "ABBA" else r["clean"]["N2"]
            assert first == io and r["clean"]["S2"] == r["wrong"].strip() != io
            assert len({r["corrupt"]["N1"], r["corrupt"]["N2"], r["corrupt"]["S2"]}) == 3
    assert tpls == list(TEMPLATES)


@pytest.mark.real_model
@pytest.mark.slow
def test_ioi_files_load_as_tasks_on_smollm2():
    from circuits.tasks import load_jsonl

    import interp

    model = interp.load_model("smollm2-135m")
    for t in range(3):
        task = load_jsonl(datasets.path(f"ioi-t{t}"), model)
        assert len(task) == 64
        task.schema.apply(task.clean)


def test_unknown_dataset_and_pairs_as_prompts_are_named_errors():
    with pytest.raises(KeyError, match="available"):
        datasets.path("wikitext")
    with pytest.raises(ValueError, match="load_jsonl"):
        datasets.prompts("ioi-t0")


def test_sample_is_deterministic_and_length_stratified():
    ps = datasets.prompts()
    a = datasets.sample(ps, 32, seed=0)
    assert a == datasets.sample(ps, 32, seed=0) and len(a) == 32
    assert a != datasets.sample(ps, 32, seed=1)
    lens = sorted(p.meta["tokens_smollm2"] for p in a)
    assert lens[0] < 40 and lens[-1] > 900
