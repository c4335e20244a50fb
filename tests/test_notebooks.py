"""Every notebook in notebooks/ runs top to bottom (nbclient, the venv's python as kernel) and is
stored with outputs stripped."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_five_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert len(names) >= 5, names
    for topic in ("quickstart", "sinks", "rope", "probes", "circuits"):
        assert any(topic in n for n in names), (topic, names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has stored outputs"
            assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from jupyter_client.kernelspec import KernelSpecManager

    # ipykernel is a dev dependency: a missing kernel is a broken install, not a skip
    spec = KernelSpecManager().get_kernel_spec("python3")
    # the native kernel runs this interpreter (the venv's python)
    assert Path(spec.argv[0]).name.startswith("python"), spec.argv
    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    client = NotebookClient(nb, timeout=1500, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})  # cwd = repo root
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{str(e)[-3000:]}")
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # something was shown: at least one figure or text result per notebook
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type in ("display_data", "execute_result", "stream")]
    assert shown, f"{path.name} produced no output"
    assert sys.executable  # the kernel inherits this environment
