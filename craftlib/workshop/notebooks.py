"""Run the workshop notebooks headless: ``python -m craftlib.workshop.notebooks [--html DIR]
[--timeout S] [names...]``.

Each notebook in ``notebooks/`` is executed with nbclient in a kernel running *this* Python (so the
venv's craftlib is the one imported), with ``CRAFT_FAST`` passed through the environment: FAST
unless ``CRAFT_FAST=0``. Executed copies go to ``build/executed/``, per-notebook wall times to
``build/notebook_times.json``, and with ``--html`` an HTML rendering of each (widgets included, from
the stored widget state) goes under the folder given.

``--clean`` instead strips outputs and execution counts from the notebooks in place (the committed
copies must be output-free; ``tests/test_notebooks.py`` checks it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from unittest.mock import patch

from craftlib.paths import ENV_FAST, REPO_ROOT, atomic_write, fast_mode

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "build"
EXECUTED_DIR = BUILD_DIR / "executed"
TIMES_FILE = BUILD_DIR / "notebook_times.json"
DEFAULT_TIMEOUT = 900  # seconds per cell


def list_notebooks(names: list[str] | None = None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_*.ipynb``) in order, or those matching ``names``.

    A name matches by file name, by stem, or by prefix (``02`` or ``02_dying`` finds
    ``02_dying_filters``).
    """
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return found
    chosen = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        hits = [p for p in found if p.stem == stem] or [p for p in found if p.stem.startswith(stem)]
        if len(hits) != 1:
            options = ", ".join(p.stem for p in found)
            raise SystemExit(
                f"notebook {name!r} matches {len(hits)} notebooks; choose one of: {options}"
            )
        chosen.append(hits[0])
    return chosen


# --------------------------------------------------------------------------------------------
# clean copies


def problems(nb) -> list[str]:
    """Why a notebook is not a clean, committable copy (empty when it is)."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            out.append(f"cell {i}: {len(cell.outputs)} stored output(s)")
        if cell.get("execution_count") is not None:
            out.append(f"cell {i}: execution_count {cell.execution_count}")
        if "execution" in cell.get("metadata", {}):
            out.append(f"cell {i}: execution timings in its metadata")
    if "widgets" in nb.metadata:
        out.append("notebook metadata holds saved widget state")
    return out


def strip(nb):
    """Remove outputs, execution counts and saved widget state (in place); return the notebook."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    return nb


def clean(paths: list[Path]) -> list[Path]:
    """Strip every notebook in ``paths`` that is not already clean; return those changed."""
    import nbformat

    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if problems(nb):
            strip(nb)
            atomic_write(path, lambda tmp: nbformat.write(nb, tmp))
            changed.append(path)
    return changed


# --------------------------------------------------------------------------------------------
# execution


def _kernel_manager():
    """A kernel manager that starts ipykernel under ``sys.executable`` whatever kernelspecs
    exist."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name=f"Python ({sys.executable})",
        language="python",
    )

    class _ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return spec

    return KernelManager(kernel_name="python3", kernel_spec_manager=_ThisPython())


def execute(
    path: Path,
    out_dir: Path = EXECUTED_DIR,
    timeout: int = DEFAULT_TIMEOUT,
    fast: bool | None = None,
    allow_errors: bool = False,
):
    """Execute one notebook; write the executed copy to ``out_dir``; return ``(notebook, seconds)``.

    ``fast`` sets ``CRAFT_FAST`` for the kernel (default: FAST unless the environment says ``0``).
    The kernel's working directory is the notebook's folder, as in Jupyter.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    fast = fast_mode(default=True) if fast is None else fast
    # the kernel inherits this environment
    with patch.dict(os.environ, {ENV_FAST: "1" if fast else "0"}):
        client = NotebookClient(
            nb,
            timeout=timeout,
            km=_kernel_manager(),
            allow_errors=allow_errors,
            record_timing=True,
            store_widget_state=True,
            resources={"metadata": {"path": str(path.parent)}},
        )
        start = time.perf_counter()
        try:
            client.execute()
        finally:
            seconds = time.perf_counter() - start
            out = Path(out_dir) / path.name
            # also on failure: the traceback is in it
            atomic_write(out, lambda tmp: nbformat.write(nb, tmp))
    return nb, seconds


def render_html(nb, out: Path) -> Path:
    """Render an executed notebook to a standalone HTML page (widget state embedded) that works
    offline.

    The widget manager, RequireJS and MathJax go to ``static/`` beside the page
    (``handout.render_offline``, fetched once from the npm registry, pinned by SHA-256). Without
    them (offline, nothing cached) the page falls back to nbconvert's CDN links, and says so.
    """
    from .handout import render_offline

    try:
        return render_offline(nb, Path(out))
    except OSError as err:
        from nbconvert import HTMLExporter

        print(
            f"warning: {out} loads its widget and math JavaScript from a CDN ({err})",
            file=sys.stderr,
        )
        body, _ = HTMLExporter().from_notebook_node(nb)
        return atomic_write(out, lambda tmp: tmp.write_text(body, encoding="utf-8"))


def record_times(times: dict[str, float], fast: bool, path: Path = TIMES_FILE) -> Path:
    """Merge ``{notebook: seconds}`` into the JSON record of execution times."""
    mode = "fast" if fast else "full"
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        data = {}
    entry = data.setdefault(mode, {})
    for name, seconds in times.items():
        entry[name] = round(seconds, 1)
    data["threads"] = os.environ.get("OMP_NUM_THREADS")
    data["cpus"] = os.cpu_count()
    return atomic_write(
        path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    )


def run(
    paths: list[Path],
    out_dir: Path = EXECUTED_DIR,
    html: Path | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    fast: bool | None = None,
    log=print,
) -> dict[str, float]:
    """Execute ``paths`` in order (stopping at the first failure) and return their wall times."""
    if fast is None:
        fast = os.environ.get(ENV_FAST, "1").strip().lower() not in {"0", "false", "no", "off"}
    times: dict[str, float] = {}
    log(
        f"executing {len(paths)} notebook(s) in {'FAST' if fast else 'full'} mode with "
        f"{sys.executable}"
    )
    try:
        for path in paths:
            nb, seconds = execute(path, out_dir, timeout, fast)
            times[path.stem] = seconds
            log(f"  {path.stem:<32} {seconds:7.1f} s")
            if html is not None:
                render_html(nb, Path(html) / f"{path.stem}.html")
    finally:
        if times:
            record_times(times, fast)
    log(f"  {'total':<32} {sum(times.values()):7.1f} s   (executed copies in {out_dir})")
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m craftlib.workshop.notebooks", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "names", nargs="*", help="notebooks to run (default: all), e.g. 00 02_dying_filters"
    )
    ap.add_argument(
        "--html", type=Path, help="also render executed notebooks to HTML in this folder"
    )
    ap.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds allowed per cell")
    ap.add_argument("--out", type=Path, default=EXECUTED_DIR, help="folder for executed copies")
    ap.add_argument(
        "--clean",
        action="store_true",
        help="strip outputs from the notebooks in place; run nothing",
    )
    args = ap.parse_args(argv)
    paths = list_notebooks(args.names)
    if not paths:
        print(f"no notebooks found in {NOTEBOOK_DIR}", file=sys.stderr)
        return 1
    if args.clean:
        changed = clean(paths)
        print(f"cleaned {len(changed)} notebook(s)" + "".join(f"\n  {p}" for p in changed))
        return 0
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    try:
        run(paths, args.out, args.html, args.timeout)
    except (CellExecutionError, DeadKernelError, TimeoutError) as err:
        print(f"\nFAILED ({type(err).__name__}): {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
