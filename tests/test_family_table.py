"""benchmarks/family_table.py folds recorded outcomes into README cells (latest run per test wins)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import family_table as ft  # noqa: E402


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{torn line\n")


def test_cells_fold_latest_outcomes(tmp_path):
    res = tmp_path / "r.jsonl"
    _write(res, [
        {"family": "llama", "column": "circuits", "test": "t::a[llama]", "outcome": "failed", "time": 1},
        {"family": "llama", "column": "circuits", "test": "t::a[llama]", "outcome": "passed", "time": 2},
        {"family": "llama", "column": "circuits", "test": "t::b[llama]", "outcome": "passed", "time": 2},
        {"family": "gpt2", "column": "circuits", "test": "t::a[gpt2]", "outcome": "passed", "time": 1},
        {"family": "gpt2", "column": "circuits", "test": "t::b[gpt2]", "outcome": "failed", "time": 1},
        {"family": "gpt2", "column": "rope analyses", "test": "t::c", "outcome": "passed", "time": 1,
         "note": "no rotary: clear error"},
    ])
    cells = ft.load(res)
    assert ft.cell(cells[("llama", "circuits")]) == "✔"
    assert ft.cell(cells[("gpt2", "circuits")]) == "✘"
    assert ft.cell(cells[("gpt2", "rope analyses")]) == "✔ (no rotary: clear error)"
    assert ft.cell(None) == "–"
    text = ft.table(cells)
    assert text.splitlines()[2].startswith("| llama |") and "| gpt2 |" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{ft.START}\nold\n{ft.END}\noutro\n")
    ft.write_readme(text, readme)
    out = readme.read_text()
    assert "old" not in out and out.startswith("intro") and out.endswith("outro\n") and "| llama |" in out
