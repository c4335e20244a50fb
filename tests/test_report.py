"""Report framework: sections never dropped, atomic self-contained output, rendering in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import plotly.graph_objects as go
import pytest
import torch

from interp.reports import (
    Prompt,
    Report,
    ReportContext,
    Section,
    SectionOutput,
    SectionSkipped,
    Table,
    build_report,
    choose_sections,
    jsonable,
    load_prompts,
    run_section,
)
from interp.reports._meta import build_metadata
from interp.reports.browser import check_rendering, find_chromium

SCREENSHOT_DIR = Path(os.environ.get("INTERP_SCREENSHOT_DIR", Path(__file__).resolve().parents[1] / "reports" / "screenshots"))


class _FakeModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.cfg = SimpleNamespace(n_layers=2, n_heads=3, d_model=8, d_head=4, n_ctx=16, d_vocab=10,
                                   model_name="fake")


def _ctx() -> ReportContext:
    return ReportContext(model=_FakeModel(), model_name="fake", prompts=[Prompt("a b c"), Prompt("x = 1", "code")])


def _heatmap_fig() -> go.Figure:
    fig = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], x=["0:a", "1:b"], y=[0, 1]))
    fig.update_layout(title="a heatmap", xaxis_title="token", yaxis_title="layer")
    return fig


def _ok(ctx: ReportContext) -> SectionOutput:
    return SectionOutput(data={"x": torch.tensor([1.0, float("nan")]), "n": 3}, figures=[_heatmap_fig()],
                         tables=[Table("t", ["a", "b"], [["<b>", 1.5], ["nan", float("nan")]])],
                         hooks=["blocks.0.hook_resid_post"])


def _boom(ctx: ReportContext) -> SectionOutput:
    raise RuntimeError("numbers went bad\nsecond line")


def _skip(ctx: ReportContext) -> SectionOutput:
    raise SectionSkipped("model has no rotary embeddings (positional encoding: standard)")


def _absent(ctx: ReportContext) -> SectionOutput:
    import interp.not_a_module_xyz  # noqa: F401

    return SectionOutput()


def _fake_report(sections: list[Section]) -> Report:
    ctx = _ctx()
    results = [run_section(s, ctx) for s in sections]
    meta = build_metadata(model=ctx.model, model_name="fake", prompts=ctx.prompts, seed=0, prepend_bos=True,
                          sections=[s.name for s in sections], hooks=[h for r in results for h in r.output.hooks])
    return Report(results=results, meta=meta, prompts=ctx.prompts)


SECS = [Section("good", "Good section", "works", _ok), Section("bad", "Bad section", "raises", _boom),
        Section("nope", "Not applicable", "skips", _skip), Section("absent", "Absent module", "missing", _absent),
        Section("req", "Requires", "needs a module", _ok, requires=("interp.no_such_analysis",))]


def test_every_outcome_is_kept_with_its_reason():
    rep = _fake_report(SECS)
    status = {r.name: (r.status, r.reason) for r in rep.results}
    assert status["good"] == ("ok", None)
    assert status["bad"][0] == "failed" and status["bad"][1] == "RuntimeError: numbers went bad"
    assert status["nope"] == ("skipped", "model has no rotary embeddings (positional encoding: standard)")
    # an import that fails inside a section is a failure (a typo must not ship as "skipped")
    assert status["absent"][0] == "failed" and "interp.not_a_module_xyz" in status["absent"][1]
    assert status["req"][0] == "skipped" and "interp.no_such_analysis" in status["req"][1]
    assert rep.failed == ["bad", "absent"] and set(rep.skipped) == {"nope", "req"}


def test_a_missing_third_party_module_is_a_failure_not_a_skip():
    def needs_dep(ctx):
        import some_third_party_pkg_xyz  # noqa: F401

    res = run_section(Section("dep", "dep", "d", needs_dep), _ctx())
    assert res.status == "failed" and "some_third_party_pkg_xyz" in res.reason


def test_choose_sections_rejects_unknown_names():
    with pytest.raises(KeyError, match="unknown section.*nosuch.*known sections: model"):
        choose_sections(["nosuch"])
    names = [s.name for s in choose_sections(["capture", "model"])]
    assert names == ["model", "capture"]  # report order, not argument order
    assert "model" not in [s.name for s in choose_sections(None, ["model"])]


def test_json_holds_numbers_and_metadata(tmp_path):
    rep = _fake_report(SECS)
    html_path, json_path = rep.save(tmp_path / "out", stem="fake")
    assert html_path.name == "fake.html" and json_path.name == "fake.json"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fake.html", "fake.json"]  # no tmp left
    doc = json.loads(json_path.read_text())
    meta = doc["meta"]
    for key in ("model", "dtype", "device", "prepend_bos", "seed", "versions", "hooks", "prompts"):
        assert key in meta, key
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or meta["versions"]["torch"]
    assert meta["hooks"] == ["blocks.0.hook_resid_post"]
    import hashlib

    assert meta["prompts"][1]["sha256_16"] == hashlib.sha256(b"x = 1").hexdigest()[:16]
    good = next(s for s in doc["sections"] if s["name"] == "good")
    assert good["data"] == {"x": [1.0, None], "n": 3}  # NaN → null, JSON stays strict
    assert good["figures"] == ["a heatmap"]
    assert good["tables"][0]["rows"] == [["<b>", 1.5], ["nan", None]]
    bad = next(s for s in doc["sections"] if s["name"] == "bad")
    assert bad["status"] == "failed" and bad["data"] == {}


def test_atomic_write_keeps_old_file_when_rendering_fails(tmp_path, monkeypatch):
    rep = _fake_report(SECS[:1])
    rep.save(tmp_path, stem="r")
    before = (tmp_path / "r.html").read_text()
    import interp.reports._html as h

    def broken(*a, **k):
        raise RuntimeError("render failed")

    monkeypatch.setattr(h, "render_html", broken)
    with pytest.raises(RuntimeError):
        rep.save(tmp_path, stem="r")
    assert (tmp_path / "r.html").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_html_is_self_contained_with_plotly_once():
    html = _fake_report(SECS).to_html()
    assert html.count("<script") == html.count("</script>")
    assert not re.search(r"<script[^>]+src=", html), "no external scripts"
    # the plotly.js bundle (its licence header) appears exactly once, in <head>; the body (figures)
    # refers to no CDN (the bundle itself mentions cdn.plot.ly only for map topojson, unused here)
    head, body = html.split("</head>", 1)
    assert "cdn.plot.ly" not in body and "https://" not in body.split("<h2>Prompts</h2>")[0].replace(
        "https://plotly.com", "")
    assert head.count("plotly.js v") >= 1 and body.count("plotly.js v") == 0
    assert "&lt;b&gt;" in html  # table cells are escaped
    for name in ("good", "bad", "nope", "absent", "req"):
        assert f'id="sec-{name}"' in html


def test_jsonable_handles_tensors_and_dataclasses():
    from dataclasses import dataclass

    @dataclass
    class R:
        a: torch.Tensor
        b: float

    assert jsonable({"r": R(torch.arange(3), float("inf"))}) == {"r": {"a": [0, 1, 2], "b": None}}


def test_load_prompts_errors_name_the_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"text": "hello", "domain": "code", "id": 3}\n"bare string"\n\n# comment\n')
    got = load_prompts(p)
    assert [(x.text, x.domain) for x in got] == [("hello", "code"), ("bare string", "prose")]
    assert got[0].meta == {"id": 3}
    p.write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: missing or empty 'text'"):
        load_prompts(p)
    p.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match=r":2: not valid JSON"):
        load_prompts(p)
    p.write_text("\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        load_prompts(p)
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "missing.jsonl")


# ----------------------------------------------------------------------------------------------
# Chromium: the report as a person sees it

needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="Chromium not installed (Debian: apt-get install -y chromium)")


@needs_chromium
@pytest.mark.slow
def test_browser_check_catches_a_broken_figure(tmp_path):
    """Negative control: the render check must notice a JavaScript error and an unrendered figure."""
    html = _fake_report(SECS[:1]).to_html()
    html = html.replace("</body>", '<div class="plotly-graph-div"></div><script>undefinedFunction()</script></body>')
    (tmp_path / "broken.html").write_text(html)
    chk = check_rendering(tmp_path / "broken.html")
    assert chk.figures == 2 and chk.rendered == 1
    assert any("undefinedFunction" in e for e in chk.js_errors)
    assert not chk.ok


@needs_chromium
@pytest.mark.slow
def test_fake_report_renders_in_chromium(tmp_path):
    html_path, _ = _fake_report(SECS).save(tmp_path, stem="fake")
    chk = check_rendering(html_path)
    assert chk.ok, (chk.figures, chk.rendered, chk.js_errors)
    assert chk.figures == 1


@pytest.mark.real_model
@pytest.mark.slow
@needs_chromium
def test_smollm2_report_renders_every_figure(smollm2, tmp_path):
    prompts = [Prompt("When Mary and John went to the store, John gave a drink to", "prose"),
               Prompt("for i in range(10):\n    print(i)\n", "code")]
    rep = build_report(smollm2, model_name="smollm2-135m", prompts=prompts, only=["model", "capture"],
                       progress=False)
    assert [r.status for r in rep.results] == ["ok", "ok"], [(r.name, r.reason) for r in rep.results]
    _check_figures_are_labelled(rep)
    cap = rep.section("capture").output.data
    # first prompt: 1 BOS + the HF tokenisation
    assert cap["n_tokens"][0] == len(smollm2.to_tokens(prompts[0].text)[0])
    html_path, json_path = rep.save(tmp_path, stem="smollm2-135m")
    shot = SCREENSHOT_DIR / "report-smollm2-model-capture.png"
    chk = check_rendering(html_path, screenshot=shot)
    assert chk.ok, (chk.figures, chk.rendered, chk.js_errors)
    assert chk.figures == sum(len(r.output.figures) for r in rep.results) >= 3
    assert chk.screenshot is not None and chk.screenshot.stat().st_size > 10_000


def _check_figures_are_labelled(rep: Report) -> None:
    for r in rep.results:
        for fig in r.output.figures:
            title = fig.layout.title.text
            assert title, f"{r.name}: figure without title"
            for ax in ("xaxis", "yaxis"):
                axis = getattr(fig.layout, ax, None)
                if axis is not None and fig.data and fig.data[0].type not in ("pie", "table", "sankey"):
                    assert axis.title.text, f"{r.name}: {title!r} has no {ax} label"


@pytest.mark.slow
@needs_chromium
def test_toy_model_report_every_section_renders(toy_model, tmp_path):
    """Every default section on a planted toy model (fast): ok or skipped with a reason, never
    failed; every figure renders with no JavaScript error; screenshot saved."""
    model = toy_model("toy-offset-rope")
    rep = build_report(model, model_name="toy-offset-rope", progress=False, options={"max_offset": 4})
    status = {r.name: (r.status, r.reason) for r in rep.results}
    assert not rep.failed, status
    assert status["circuit"][0] == "skipped"  # IOI needs a natural-language model
    for name in ("model", "capture", "heads", "sinks", "rope"):
        assert status[name][0] == "ok", (name, status[name])
    _check_figures_are_labelled(rep)
    heads = rep.section("heads").output.data
    # the planted mechanism: one head attends exactly 3 tokens back
    offsets = torch.tensor(heads["offset"])  # [layer head delta]
    assert float(offsets[0, :, 3].max()) > 0.5
    html_path, json_path = rep.save(tmp_path, stem="toy-offset-rope")
    chk = check_rendering(html_path, screenshot=SCREENSHOT_DIR / "report-toy-offset-rope.png")
    assert chk.ok, (chk.figures, chk.rendered, chk.js_errors)
    assert chk.figures == sum(len(r.output.figures) for r in rep.results)
    doc = json.loads(json_path.read_text())
    # toys get 128 examples of their own task (was 6)
    assert doc["meta"]["model"] == "toy-offset-rope" and len(doc["meta"]["prompts"]) == 128


@pytest.mark.slow
def test_cli_report_end_to_end_on_a_toy_model(tmp_path):
    """`interp report` as the Makefile runs it: a subprocess, exit 0, both files written."""
    import subprocess
    import sys

    interp_bin = Path(sys.executable).with_name("interp")
    assert interp_bin.exists(), "console script missing: the package is not installed (make setup)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([str(interp_bin), "--threads", "1", "report", "toy-offset-rope", "--only", "model,capture,heads",
                        "--out", str(tmp_path), "--no-progress"], capture_output=True, text=True, env=env,
                       timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["toy-offset-rope.html", "toy-offset-rope.json"]
    doc = json.loads((tmp_path / "toy-offset-rope.json").read_text())
    assert [s["status"] for s in doc["sections"]] == ["ok", "ok", "ok"]
