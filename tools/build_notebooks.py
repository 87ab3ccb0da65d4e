"""Rebuild the committed notebooks from their jupytext sources.

Each ``notebooks/NN_name.py`` (jupytext percent format) is the source of
``notebooks/NN_name.ipynb``: it is converted, executed top to bottom with
nbclient in an empty temporary folder (so it imports the installed package)
and saved with its outputs, without timing metadata and with cell ids taken
from the cells' text (not random ones), so that the diff of a rebuild shows
only what changed.

    python tools/build_notebooks.py                 # every notebook
    python tools/build_notebooks.py 05_caffe_weights
"""
import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import jupytext
import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def stable_ids(nb):
    """Give every cell an id made from its type and text: a cell that did not change keeps its id.

    A repeated cell gets its text's id with ``-2``, ``-3``, .. after it.
    """
    seen = {}
    for cell in nb.cells:
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:12]
        seen[digest] = seen.get(digest, 0) + 1
        cell.id = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"


def build(source):
    nb = jupytext.read(source)
    stable_ids(nb)
    with tempfile.TemporaryDirectory() as cwd:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": cwd}}).execute()
    target = source.with_suffix(".ipynb")
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, target)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names without extension (default: all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DEEPLAB_CAFFE_REAL", str(NOTEBOOKS.parent / "tests" / "data" / "caffe-real"))
    sources = ([NOTEBOOKS / f"{name}.py" for name in args.names] if args.names
               else sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")))
    for source in sources:
        print(f"{source.name} -> {build(source).name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
