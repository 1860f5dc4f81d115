"""Write each notebook's .ipynb from its source, the jupytext percent file beside it.

The notebooks' sources are ``notebooks/*.py`` in jupytext's percent format: plain Python that
ruff lints with the rest of the kit, one ``# %%`` line per cell, the papermill parameters cell
tagged ``# %% tags=["parameters"]``. papermill and Jupyter run the paired ``.ipynb``, which this
script writes from the source: no outputs, stable cell ids (no churn in git diffs), the pairing
recorded in the metadata so jupytext keeps both in step when a notebook is edited in Jupyter.

    python tools/sync_notebooks.py           # after editing a notebooks/*.py
    python tools/sync_notebooks.py --check   # exit 1 when an .ipynb differs from its source
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
METADATA = {
    "jupytext": {"formats": "ipynb,py:percent"},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def sources() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.py"))


def build(source: Path) -> str:
    """The .ipynb text for one percent-format source."""
    notebook = jupytext.read(source, fmt="py:percent")
    notebook.metadata = dict(METADATA)
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"{source.stem[:2]}-{index:02d}"
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    text = nbformat.writes(nbformat.from_dict(notebook), version=4)
    return text if text.endswith("\n") else text + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when an .ipynb differs from its source")
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        target = source.with_suffix(".ipynb")
        text = build(source)
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        stale.append(target.relative_to(ROOT))
        if not args.check:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    if args.check and stale:
        print("out of date (run python tools/sync_notebooks.py): "
              + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
