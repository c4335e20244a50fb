"""The ``interp`` CLI: exit codes (0 ok, 1 analysis failure, 2 usage/bad input), one-line errors,
``--json`` output, and the report command writing HTML + JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interp import cli
from interp.reports import SECTIONS, Section, SectionOutput, Table

runner = CliRunner()
INTERP = str(Path(sys.executable).with_name("interp"))


def _invoke(*args: str):
    return runner.invoke(cli.app, list(args), catch_exceptions=False)


def _one_line_error(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def fake_sections(monkeypatch):
    """Two cheap sections so the CLI can be tested without running real analyses."""
    def good(ctx):
        return SectionOutput(data={"n_prompts": len(ctx.prompts), "bos": ctx.prepend_bos, "seed": ctx.seed},
                             tables=[Table("numbers", ["k", "v"], [["a", 1.5]])], notes=["a note"])

    def bad(ctx):
        raise RuntimeError("the analysis broke")

    monkeypatch.setitem(SECTIONS, "zgood", Section("zgood", "Good", "ok section", good, default=False, order=900))
    monkeypatch.setitem(SECTIONS, "zbad", Section("zbad", "Bad", "failing section", bad, default=False, order=901))
    monkeypatch.setitem(SECTIONS, "zabsent", Section("zabsent", "Absent", "needs a missing module", good,
                                                     requires=("interp.no_such_mod",), default=False, order=902))


@pytest.fixture
def fake_model(monkeypatch):
    import torch
    from types import SimpleNamespace

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))
            self.cfg = SimpleNamespace(n_layers=1, n_heads=1, d_model=1, d_head=1, n_ctx=8, d_vocab=2)

    monkeypatch.setattr(cli, "_load_model", lambda name, debug, dtype="float32": M())


def test_help_lists_every_command():
    res = _invoke("--help")
    assert res.exit_code == 0
    for cmd in ("report", "sections", "sinks", "heads", "rope", "probe", "circuit", "capture", "zoo"):
        assert cmd in res.stdout


@pytest.mark.slow
def test_unknown_section_is_a_usage_error():
    res = _invoke("report", "--only", "nosuch")
    assert res.exit_code == 2
    line = _one_line_error(res.stderr)
    assert "unknown section(s) nosuch" in line and "known sections:" in line


def test_missing_prompt_file_is_a_usage_error(tmp_path):
    res = _invoke("report", "--only", "model", "--prompts", str(tmp_path / "none.jsonl"))
    assert res.exit_code == 2
    assert "does not exist" in _one_line_error(res.stderr)


@pytest.mark.slow
def test_bad_prompt_line_is_a_usage_error(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"text": "fine"}\n{"oops": 1}\n')
    res = _invoke("report", "--prompts", str(p))
    assert res.exit_code == 2
    assert "p.jsonl:2" in _one_line_error(res.stderr)


def test_unknown_model_is_a_usage_error_naming_known_models():
    res = _invoke("report", "no-such-model-xyz", "--only", "model")
    assert res.exit_code == 2
    line = _one_line_error(res.stderr)
    assert "no-such-model-xyz" in line and "smollm2-135m" in line


def test_report_writes_html_and_json_and_exit_zero(tmp_path, fake_sections, fake_model):
    res = _invoke("report", "toy/model", "--only", "zgood", "--out", str(tmp_path), "--seed", "7", "--no-bos",
                  "--no-progress")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.html", "model.json"]
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["meta"]["seed"] == 7 and doc["meta"]["prepend_bos"] is False
    # the default prompt set is the bundled interp.datasets set (280 prompts; was 7)
    assert doc["sections"][0]["data"] == {"n_prompts": 280, "bos": False, "seed": 7}


def test_failed_section_exits_one_but_still_writes_the_report(tmp_path, fake_sections, fake_model):
    res = _invoke("report", "--only", "zgood,zbad", "--out", str(tmp_path), "--no-progress")
    assert res.exit_code == 1
    assert "zbad" in _one_line_error(res.stderr)
    doc = json.loads((tmp_path / "smollm2-135m.json").read_text())
    assert [(s["name"], s["status"]) for s in doc["sections"]] == [("zgood", "ok"), ("zbad", "failed")]
    assert doc["sections"][1]["reason"] == "RuntimeError: the analysis broke"


def test_requested_section_that_cannot_run_exits_one(tmp_path, fake_sections, fake_model):
    res = _invoke("report", "--only", "zabsent", "--out", str(tmp_path), "--no-progress")
    assert res.exit_code == 1
    assert "could not run: zabsent" in _one_line_error(res.stderr)


def test_debug_shows_the_traceback(tmp_path, fake_sections, fake_model):
    res = _invoke("report", "--only", "zbad", "--out", str(tmp_path), "--no-progress", "--debug")
    assert res.exit_code == 1
    assert "Traceback" in res.stderr and "the analysis broke" in res.stderr


def test_subcommand_json_output(fake_sections, fake_model):
    """``_run_one`` is what every analysis subcommand (sinks, heads, rope, ...) calls."""
    from interp.cli import _run_one

    def run(name: str, json_out: bool):
        return runner.invoke(_single_command_app(lambda: _run_one(name, "m", None, 0, False, json_out, None, False)), [])

    out = run("zgood", True)
    assert out.exit_code == 0, out.stderr
    doc = json.loads(out.stdout)
    sec = doc["sections"][0]
    assert sec["status"] == "ok" and sec["data"]["n_prompts"] == 280 and doc["meta"]["model"] == "m"
    out = run("zgood", False)
    assert out.exit_code == 0 and "numbers" in out.stdout and "a | 1.5" in out.stdout
    out = run("zbad", True)
    assert out.exit_code == 1 and "zbad failed: RuntimeError: the analysis broke" in _one_line_error(out.stderr)
    assert json.loads(out.stdout)["sections"][0]["status"] == "failed"  # the JSON still comes out
    out = run("zabsent", True)
    assert out.exit_code == 1 and "zabsent skipped" in _one_line_error(out.stderr)


def _single_command_app(fn):
    import typer

    a = typer.Typer()

    @a.command()
    def run() -> None:
        fn()

    return a


def test_sections_command_lists_builtin_sections():
    res = _invoke("sections", "--json")
    assert res.exit_code == 0
    names = [s["name"] for s in json.loads(res.stdout)]
    assert names[:2] == ["model", "capture"]


@pytest.mark.slow
def test_console_script_exit_code_and_one_line_error():
    """The installed console script itself (not only the in-process runner)."""
    assert Path(INTERP).exists(), "console script missing: the package is not installed (make setup)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for args in (["report", "--only", "nosuch"], ["report", "--bogus-option"], ["--threads", "0", "sections"]):
        p = subprocess.run([INTERP, *args], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 2, (args, p.stderr)
        _one_line_error(p.stderr)
    p = subprocess.run([INTERP, "sections"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and "capture" in p.stdout


@pytest.mark.real_model
@pytest.mark.slow
def test_capture_json_on_smollm2(monkeypatch, smollm2, tmp_path):
    monkeypatch.setattr(cli, "_load_model", lambda name, debug, dtype="float32": smollm2)
    p = tmp_path / "p.jsonl"
    p.write_text('{"text": "The cat sat on the mat."}\n{"text": "x = 1", "domain": "code"}\n')
    res = _invoke("capture", "--prompts", str(p), "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    sec = doc["sections"][0]
    assert sec["status"] == "ok" and doc["meta"]["model"] == "smollm2-135m"
    norms = sec["data"]["resid_norm_mean"]
    assert len(norms) == smollm2.cfg.n_layers
    assert len(sec["data"]["attention_entropy"][0]) == smollm2.cfg.n_heads
    assert doc["meta"]["n_prompts"] == 2 and doc["meta"]["prepend_bos"] is True


# ---------------------------------------------------------------------------------------------
# interp circuit: built-in tasks and the user's own clean/counterfactual pairs (JSONL)

# toy-induction has a word-level vocabulary t0…t63 split on whitespace: slots sit between literal
# tokens (adjacent slots are ambiguous). Clean repeats A, so induction predicts the token after A.
_PAIRS = [
    '{"template": "{A} t1 {B} t2 {C}"}',
    '{"clean": {"A": "t5", "B": "t6", "C": "t5"}, "corrupt": {"A": "t5", "B": "t6", "C": "t9"}, '
    '"correct": " t1", "wrong": " t3"}',
    '{"clean": {"A": "t10 t11", "B": "t12", "C": "t10"}, "corrupt": {"A": "t10 t11", "B": "t12", "C": "t14"}, '
    '"correct": " t11", "wrong": " t1"}',
    '{"clean": {"A": "t20", "B": "t21 t22", "C": "t20"}, "corrupt": {"A": "t20", "B": "t21 t22", "C": "t24"}, '
    '"correct": " t1", "wrong": " t3"}',
]


@pytest.fixture
def toy_induction(monkeypatch, toy_model):
    m = toy_model("toy-induction")
    loads: list[str] = []

    def load(name, debug, dtype="float32"):
        loads.append(name)
        return m

    monkeypatch.setattr(cli, "_load_model", load)
    return loads


def _pairs_file(tmp_path, lines=_PAIRS, name="pairs.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.slow
def test_circuit_on_user_pairs_json(tmp_path, toy_induction):
    p = _pairs_file(tmp_path)
    res = _invoke("circuit", "toy-induction", "--pairs", str(p), "--json", "--no-bos", "--seed", "3",
                  "--html", str(tmp_path / "out" / "circ.html"))
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    sec = doc["sections"][0]
    assert sec["name"] == "circuit" and sec["status"] == "ok", sec.get("reason")
    d = sec["data"]
    assert d["task"]["name"] == "pairs" and d["task"]["source"] == "pairs" and d["task"]["n"] == 3
    assert d["task"]["metric"] == "logit_diff" and d["task"]["meta"]["template"] == "{A} t1 {B} t2 {C}"
    assert d["task"]["prepend_bos"] is False and doc["meta"]["prepend_bos"] is False and doc["meta"]["seed"] == 3
    assert d["method"] == "eap" and d["granularity"] == "span"
    assert {"curve_span", "curve_none", "circuit", "graph_span_top_edges"} <= set(d)
    # the span graph's positions are the template's spans (no BOS with --no-bos)
    assert set(d["circuit"]["positions"]) <= {"A", "t1", "B", "t2", "C"}, d["circuit"]["positions"]
    assert sorted(q.name for q in (tmp_path / "out").iterdir()) == ["circ.html", "circ.json"]


@pytest.mark.slow
def test_circuit_builtin_task_method_granularity_n(toy_induction):
    res = _invoke("circuit", "toy-induction", "--task", "induction", "--n", "3", "--method", "eap-ig",
                  "--ig-steps", "2", "--granularity", "position", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    d = doc["sections"][0]["data"]
    assert d["task"]["name"] == "induction" and d["task"]["source"] == "builtin" and d["task"]["n"] == 3
    assert d["task"]["metric"] == "logprob" and d["task"]["prepend_bos"] is True
    assert d["method"] == "eap-ig" and d["ig_steps"] == 2 and d["granularity"] == "position"
    assert {"curve_position", "curve_none", "graph_position_top_edges"} <= set(d) and "curve_span" not in d
    res = _invoke("circuit", "toy-induction", "--task", "induction", "--n", "2", "--granularity", "none", "--json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)["sections"][0]["data"]
    assert d["granularity"] == "none" and d["task"]["n"] == 2
    assert "curve_none" in d and "curve_span" not in d and "curve_position" not in d


def test_circuit_dry_run_and_max_memory(toy_induction):
    """--dry-run prints the estimate per part (no attribution runs); --max-memory too small for
    one example fails before running with what would fit; a bad size names the format."""
    res = _invoke("circuit", "toy-induction", "--task", "induction", "--n", "3", "--dry-run", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["examples"] == 3 and doc["tokens"] > 0 and set(doc["estimate"]) == {"span", "none"}
    assert doc["estimate"]["span"]["peak"] >= doc["estimate"]["span"]["output"] > 0
    res = _invoke("circuit", "toy-induction", "--task", "induction", "--n", "3", "--max-memory", "1KiB",
                  "--json")
    assert res.exit_code == 1 and "max_memory" in res.stdout + res.stderr
    res = _invoke("circuit", "toy-induction", "--task", "induction", "--max-memory", "lots", "--dry-run")
    assert res.exit_code != 0 and "8GiB" in _one_line_error(res.stderr)


def test_circuit_natural_language_task_on_a_toy_is_skipped_with_a_reason(toy_induction):
    res = _invoke("circuit", "toy-induction", "--json")  # default task: ioi
    assert res.exit_code == 1
    assert "IOI needs a natural-language model" in _one_line_error(res.stderr)


@pytest.mark.parametrize("lines, expected", [
    (['{"template": "{A} t1 {B} t2 {C}"}', "{not json"], ["pairs.jsonl:2", "not valid JSON"]),
    ([_PAIRS[1]], ["no template", '"template"']),
    (['{"template": "{A} t1 {B} t2 {C}"}', '{"clean": "t5 t1 t6 t2 t5", "corrupt": "t5 t1 t6 t2 t9", '
      '"correct": " t1"}'], ["pairs.jsonl:2", "missing 'wrong'"]),
    (['{"template": "{A} t1 {B} t2 {C}"}', '{"clean": "t5 t1 t6 t2 t5", "corrupt": "t5 t6 t9", '
      '"correct": " t1", "wrong": " t3"}'], ["do not fit the schema", "t5 t6 t9"]),
    (['{"template": "{A} t1 {B} t2 {C}"}', '{"clean": {"A": "t5", "B": "t6"}, "corrupt": "t5 t1 t6 t2 t9", '
      '"correct": " t1", "wrong": " t3"}'], ["pairs.jsonl:2", "clean"]),
    (['{"template": "{A} t1 {B} t2 {C}"}', '{"clean": "t5 t1 t6 t2 t5", "corrupt": "t5 t1 t6 t2 t9", '
      '"correct": " t1 t2", "wrong": " t3"}'], ["2 tokens", "single"]),
    ([], ["no examples"]),
])
def test_circuit_malformed_pairs_are_usage_errors(tmp_path, toy_induction, lines, expected):
    p = _pairs_file(tmp_path, lines)
    res = _invoke("circuit", "toy-induction", "--pairs", str(p))
    assert res.exit_code == 2, (res.stdout, res.stderr)
    line = _one_line_error(res.stderr)
    assert line.startswith("error: --pairs:") and "README" in line, line
    for e in expected:
        assert e in line, (e, line)


def test_circuit_missing_pairs_file_is_a_usage_error_before_loading(tmp_path, toy_induction):
    res = _invoke("circuit", "toy-induction", "--pairs", str(tmp_path / "nope.jsonl"))
    assert res.exit_code == 2
    line = _one_line_error(res.stderr)
    assert "nope.jsonl" in line and "does not exist" in line
    assert toy_induction == []  # no model was loaded


@pytest.mark.parametrize("args, expected", [
    (["--task", "ioi", "--pairs", "PAIRS"], "mutually exclusive"),
    (["--prompts", "PAIRS"], "--pairs"),
    (["--task", "sorting"], "--task"),
    (["--method", "ig"], "--method"),
    (["--granularity", "token"], "--granularity"),
    (["--n", "0"], "--n"),
    (["--pairs", "PAIRS", "--n", "3"], "every pair in the file"),
])
def test_circuit_option_errors_are_usage_errors(tmp_path, toy_induction, args, expected):
    p = _pairs_file(tmp_path)
    res = _invoke("circuit", "toy-induction", *[str(p) if a == "PAIRS" else a for a in args])
    assert res.exit_code == 2, (args, res.stderr)
    # our checks print one 'error:' line; click's own choice/range errors are one line only through
    # the console script (test_console_script_exit_code_and_one_line_error), not CliRunner
    err = (_one_line_error(res.stderr) if args[0] in ("--prompts", "--task", "--pairs") and "PAIRS" in args
           else res.stderr)
    assert expected in err
    assert toy_induction == []


def test_circuit_section_defaults_are_the_report_defaults():
    """``interp report`` passes no options: IOI, 64 examples (the bundled ioi-t0 set; was 6 before the
    report drew on interp.datasets), EAP, span granularity."""
    from interp.reports.sections.circuit import REPORT_GRID, circuit_config

    assert circuit_config({}) == {"task": "ioi", "pairs": None, "n": 64, "method": "eap", "ig_steps": 5,
                                  "granularity": "span", "grid": REPORT_GRID}
    assert circuit_config({"ioi_n": 4})["n"] == 4  # the older option name still works
    with pytest.raises(ValueError, match="granularity"):
        circuit_config({"granularity": "tokens"})
    with pytest.raises(ValueError, match="not both"):
        circuit_config({"task": "ioi", "pairs": "x.jsonl"})
