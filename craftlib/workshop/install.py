"""Installing craftlib without ``make``: what ``python -m craftlib setup`` (and ``make install``)
runs.

Standard library only, so a bare Python can run it from a fresh checkout before anything is
installed (``cli`` dispatches ``setup`` before it imports anything heavy). Every step is a ``pip``
command list run without a shell, so the same code works on Windows, macOS and Linux.

- **Learners** install from the ranges in ``pyproject.toml`` (``craftlib[lab]``: no test packages).
- **Linux laptops without an NVIDIA GPU** first take torch from PyTorch's CPU wheel index
  (``CPU_INDEX``): about 190 MB to download and 0.7 GB installed instead of about 3.0 GB and 5.3 GB
  for PyPI's default Linux build with its CUDA libraries (torch 2.13 CPU vs 2.14 CUDA wheels for
  Python 3.11, measured on this project's machine).
- **CI and developers** (``--dev``) add the test extras and install the exact versions of
  ``constraints.txt``; those pins never reach a learner. ``--torch`` applies here too: the CPU-only
  build is then the pinned torch version from PyTorch's index (without its dependencies, which come
  from PyPI at their pins).
- **A room kit** (``--kit DIR``) installs from the kit's wheels with the network off.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path

from craftlib.paths import PACKAGE_DIR

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_SIZES = (
    "CPU-only torch: about 190 MB download, 0.7 GB installed; PyPI's Linux default with "
    "CUDA: about 3.0 GB, 5.3 GB"
)
CHECKOUT = PACKAGE_DIR.parent
VENV = CHECKOUT / ".venv"


def venv_python(folder: str | os.PathLike = VENV, windows: bool | None = None) -> Path:
    """The interpreter inside a virtual environment, on Windows (``Scripts\\python.exe``) or
    elsewhere."""
    folder = Path(folder)
    if (os.name == "nt") if windows is None else windows:
        return folder / "Scripts" / "python.exe"
    return folder / "bin" / "python"


def venv_script(name: str, folder: str | os.PathLike = VENV) -> Path:
    folder = Path(folder)
    return folder / "Scripts" / f"{name}.exe" if os.name == "nt" else folder / "bin" / name


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is present (then PyPI's CUDA build of torch is worth its size)."""
    return Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None


def wants_cpu_torch(
    choice: str = "auto", system: str | None = None, gpu: bool | None = None
) -> bool:
    """``cpu``: yes; ``pypi``: no; ``auto``: on Linux without an NVIDIA GPU (other systems' PyPI
    wheels are CPU already)."""
    if choice not in ("auto", "cpu", "pypi"):
        raise ValueError(f"--torch must be auto, cpu or pypi, got {choice!r}")
    if choice != "auto":
        return choice == "cpu"
    system = system or platform.system()
    return system == "Linux" and not (has_nvidia_gpu() if gpu is None else gpu)


def reachable(url: str, timeout: float = 5.0) -> bool:
    """A TCP connection to the URL's host opens (no request is sent)."""
    from urllib.parse import urlparse

    host = urlparse(url)
    try:
        with socket.create_connection((host.hostname, host.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def torch_requirement(pyproject: Path = CHECKOUT / "pyproject.toml") -> str:
    """torch's range as pyproject.toml states it (one source for the CPU install too)."""
    import re

    text = pyproject.read_text() if pyproject.is_file() else ""
    match = re.search(r'"(torch[<>=!~][^"]*)"', text)
    return match.group(1) if match else "torch"


def pinned(name: str, constraints: Path = CHECKOUT / "constraints.txt") -> str:
    """``name==version`` as ``constraints.txt`` pins it (``--dev`` installs exactly that)."""
    for line in constraints.read_text().splitlines() if constraints.is_file() else []:
        if line.split("==")[0].strip().lower() == name.lower() and "==" in line:
            return line.split("#")[0].strip()
    raise ValueError(f"{constraints} pins no {name}")


def plan(
    python: str | os.PathLike,
    dev: bool = False,
    torch: str = "auto",
    kit: str | os.PathLike | None = None,
    editable: bool = True,
) -> list[list[str]]:
    """The pip commands that install craftlib into ``python``'s environment, in order.

    ``torch`` (``auto``/``cpu``/``pypi``, see ``wants_cpu_torch``) holds for learners and ``dev``
    alike; with ``dev`` the CPU build is constraints.txt's version, installed without dependencies
    so that everything else still comes from PyPI at its pin (a local ``+cpu`` build satisfies
    ``torch==X``).
    """
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if kit is not None:  # offline: only the kit's wheels
        wheels = str(Path(kit) / "wheels")
        return [pip + ["--no-index", "--find-links", wheels, "craftlib[lab]"]]
    target = f"{CHECKOUT}[lab,test]" if dev else f"{CHECKOUT}[lab]"
    steps = []
    if wants_cpu_torch(torch):
        spec = ["--no-deps", pinned("torch")] if dev else [torch_requirement()]
        steps.append(pip + ["--index-url", CPU_INDEX, "--retries", "1", "--timeout", "30", *spec])
    last = pip + (["-e", target] if editable else [target])
    if dev:  # CI's log stays short; learners see pip's progress
        last += ["--quiet", "-c", str(CHECKOUT / "constraints.txt")]
    steps.append(last)
    return steps


def _run(cmd: list[str], log=print) -> int:
    log("$ " + " ".join(cmd))
    return subprocess.call(cmd)


def setup(
    folder: str | os.PathLike | None = VENV,
    dev: bool = False,
    torch: str = "auto",
    kit: str | os.PathLike | None = None,
    dry_run: bool = False,
    log=print,
) -> int:
    """Create the virtual environment (unless ``folder`` is None: then this Python) and install
    craftlib.

    Returns 0 on success, else the failing step's exit code. A CPU-index step that cannot reach
    PyTorch's server is skipped with a message (pip then takes PyPI's torch).
    """
    if sys.version_info < (3, 10):
        log(f"craftlib needs Python 3.10-3.13; this is {platform.python_version()}")
        return 1
    if folder is None:
        python = Path(sys.executable)
    else:
        python = venv_python(folder)
        if not python.exists():
            log(f"creating a virtual environment in {folder}")
            if not dry_run:
                try:
                    venv.create(folder, with_pip=True)
                except Exception as err:  # e.g. Debian/Ubuntu without python3-venv
                    log(
                        f"could not create it ({err}); on Debian/Ubuntu: sudo apt install "
                        f"python3-venv"
                    )
                    return 1
    steps = plan(python, dev=dev, torch=torch, kit=kit)
    for cmd in steps:
        if CPU_INDEX in cmd:
            log(
                f"torch: the CPU-only build from PyTorch's index ({TORCH_SIZES}); --torch pypi "
                f"skips this"
            )
            if not dry_run and not reachable(CPU_INDEX):
                log(
                    f"{CPU_INDEX} cannot be reached: skipping; pip will take torch from PyPI "
                    f"instead"
                )
                continue
        if dry_run:
            log("$ " + " ".join(cmd))
            continue
        code = _run(cmd, log)
        if code and CPU_INDEX in cmd:
            log("the CPU-only torch install failed; pip will take torch from PyPI instead")
            continue
        if code:
            return code
    if not dry_run:
        log(
            f"done: {python} has craftlib. Next: `python -m craftlib check`, then `python -m "
            f"craftlib lab`"
        )
    return 0


def delegate(argv: list[str], folder: str | os.PathLike = VENV, needs: str = "torch") -> int | None:
    """Run ``python -m craftlib ARGV`` in the project's venv when this Python lacks ``needs`` (a
    module).

    Returns the exit code when it delegated, None when this Python should run the command itself.
    """
    import importlib.util

    here = Path(sys.prefix).resolve()
    target = venv_python(folder)
    if here == Path(folder).resolve() or importlib.util.find_spec(needs) is not None:
        return None
    if not target.exists():
        print(
            f"craftlib's packages are not installed for {sys.executable}. Run first:\n  python -m "
            f"craftlib setup"
        )
        return 1
    return subprocess.call([str(target), "-m", "craftlib", *argv])


# ---------------------------------------------------------------------------------------------
# CI: the widget tests under ipywidgets 7 (what Colab ships) without a second copy of torch

IPYWIDGETS7 = (
    "ipywidgets==7.7.1",
    "widgetsnbextension>=3.6,<3.7",
    "jupyterlab_widgets>=1.1,<2",
    "ipython_genutils==0.2.0",
)
"""Colab's ipywidgets (7.7.1) and the packages it needs that ipywidgets 8 does not have or has
newer."""


def site_packages(python: str | os.PathLike) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(out)


def ipywidgets7_venv(target: str | os.PathLike, base: str | os.PathLike = VENV, log=print) -> Path:
    """A small venv whose own site-packages hold only ``IPYWIDGETS7``; a ``.pth`` file adds
    ``base``'s packages.

    Its own packages come first on ``sys.path``, so ``import ipywidgets`` is 7.x while torch, pytest
    and craftlib are ``base``'s: seconds and a few MB instead of a second full install. Rebuilt when
    the pins change. Returns the venv's Python.
    """
    target, base = Path(target), Path(base)
    python = venv_python(target)
    stamp = target / ".ipywidgets7-stamp"
    wanted = "\n".join(IPYWIDGETS7) + f"\nbase={base.resolve()}\n"
    if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    if target.exists():
        shutil.rmtree(target)
    venv.create(target, with_pip=False)
    own = site_packages(python)
    base_site = site_packages(venv_python(base))
    code = subprocess.call(
        [
            str(venv_python(base)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(own),
            *IPYWIDGETS7,
        ]
    )
    if code:
        raise RuntimeError(f"could not install {' '.join(IPYWIDGETS7)} into {own}")
    (own / "zz-base-venv.pth").write_text(f"{base_site}\n")
    stamp.write_text(wanted)
    log(f"{target}: ipywidgets 7 in front of {base_site}")
    return python


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m craftlib.workshop.install", description="CI helpers for installs"
    )
    ap.add_argument(
        "--ipywidgets7", required=True, help="build (or reuse) this small venv with ipywidgets 7"
    )
    ap.add_argument("--base", default=str(VENV), help="the full venv whose packages it borrows")
    a = ap.parse_args()
    ipywidgets7_venv(a.ipywidgets7, a.base)
