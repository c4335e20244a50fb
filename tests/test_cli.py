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


def test_unknown_section_is_a_usage_error():
    res = _invoke("report", "--only", "nosuch")
    assert res.exit_code == 2
    line = _one_line_error(res.stderr)
    assert "unknown section(s) nosuch" in line and "known sections:" in line


def test_missing_prompt_file_is_a_usage_error(tmp_path):
    res = _invoke("report", "--only", "model", "--prompts", str(tmp_path / "none.jsonl"))
    assert res.exit_code == 2
    assert "does not exist" in _one_line_error(res.stderr)


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
    assert doc["sections"][0]["data"] == {"n_prompts": 7, "bos": False, "seed": 7}


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
    assert sec["status"] == "ok" and sec["data"]["n_prompts"] == 7 and doc["meta"]["model"] == "m"
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


def test_console_script_exit_code_and_one_line_error():
    """The installed console script itself (not only the in-process runner)."""
    if not Path(INTERP).exists():
        pytest.skip("console script not installed in this environment (pip install -e .)")
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
