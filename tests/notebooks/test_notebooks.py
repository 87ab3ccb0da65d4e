"""Every notebook in ``notebooks/`` runs top to bottom and checks something.

A notebook is a test: a failing cell fails it, and a notebook without a single
assertion in its code cells is refused (its claims would be unchecked). The
kernel runs in an empty temporary folder, so the notebooks import the installed
package, like a reader's would.
"""
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CAFFE_REAL = Path(__file__).resolve().parents[1] / "data" / "caffe-real"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
ASSERTION = re.compile(r"^\s*assert\b|np\.testing\.assert_|\bassert_allclose\(", re.M)


def test_there_are_notebooks():
    assert PATHS, f"no notebooks found in {NOTEBOOKS}"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_and_asserts(path, tmp_path, require_oracle, monkeypatch):
    nbformat = require_oracle("nbformat")
    nbclient = require_oracle("nbclient")
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert ASSERTION.search(code), f"{path.name} has no assertion in any code cell"
    # The kernel inherits the environment: point it at the real Caffe files of the tests.
    monkeypatch.setenv("DEEPLAB_CAFFE_REAL", str(CAFFE_REAL))
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_matches_its_jupytext_source(path, require_oracle):
    """The committed ``.ipynb`` is its ``.py`` source (jupytext percent format), executed.

    Rebuild with ``python tools/build_notebooks.py NAME`` after editing the source.
    """
    jupytext = require_oracle("jupytext")
    nbformat = require_oracle("nbformat")
    source = path.with_suffix(".py")
    assert source.is_file(), f"{path.name} has no jupytext source {source.name}"
    want = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    nb = nbformat.read(path, as_version=4)
    got = [(c.cell_type, c.source) for c in nb.cells]
    stale = [k for k, (a, b) in enumerate(zip(got, want)) if a != b]
    assert len(got) == len(want) and not stale, (
        f"{path.name} differs from {source.name} (cells {stale[:5]}, {len(got)} vs {len(want)} cells): "
        f"run python tools/build_notebooks.py {path.stem}")
    unexecuted = [k for k, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted[:5]} have no outputs; rebuild it"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_cell_ids_come_from_their_text(path, require_oracle):
    """The committed cell ids are those ``tools/build_notebooks.py`` derives from each cell's text,
    so that a rebuild changes only the ids of cells that changed."""
    import importlib.util
    nbformat = require_oracle("nbformat")
    require_oracle("jupytext")
    require_oracle("nbclient")
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS.parent / "tools" / "build_notebooks.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    nb = nbformat.read(path, as_version=4)
    committed = [c.id for c in nb.cells]
    tool.stable_ids(nb)
    assert committed == [c.id for c in nb.cells], f"{path.name}: rebuild it with python tools/build_notebooks.py"
