"""The room kit: one folder an instructor hands out on a USB stick or a local share, for a room
without Wi-Fi.

``python -m craftlib kit --out room-kit`` (online, once) builds::

    room-kit/
      README.md            how learners install and start, per operating system (written here)
      wheels/              craftlib + every dependency as wheels, for each platform and Python asked
      for data/lfw/            the instructor's LFW copy (never commit or publish it: LFW's terms)
      runs/<variant>/      pre-trained runs, kept per LFW variant (run keys include it, too)
      notebooks/           the clean workshop notebooks handout/             the notebooks executed
      in full mode, as HTML that works offline:
        NN_*.html          widget state embedded; widget manager, RequireJS and MathJax from static/
        static/            @jupyter-widgets/html-manager, requirejs, MathJax 2 (from the npm
        registry, pinned)
      licenses/            the MobileFaceNet stem's NOTICE and Apache-2.0 text, the JavaScript
      licences manifest.json        what was built, from what, how big, how long it took

Learners then install with the network off (``pip install --no-index --find-links wheels
"craftlib[lab]"``; ``craftlib[lab,federated]`` for notebook 08's Flower part, on Python >= 3.11
where Flower installs).

The wheels are the versions the instructor tested, not the newest in range: every package of
craftlib's ``lab`` and ``federated`` dependency closure is pinned to what the running (instructor's)
environment holds (``environment_pins``), for each target Python that version supports
(``pins_for``; the rest, e.g. a package whose installed version needs a newer Python, is resolved in
range and listed in the manifest).

Two limits of ``pip download --platform`` are handled here: markers are evaluated for the *building*
machine, so platform-only dependencies (``colorama`` on Windows, ``appnope`` on macOS, ...) are
found by reading each wheel's metadata for the target (``missing_requirements``), and the Intel-Mac
limits (torch < 2.3 with NumPy < 2) are given as constraints. Linux gets torch from PyTorch's CPU
index.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from unittest.mock import patch

from craftlib.paths import ENV_CACHE, ENV_DATA, ENV_FAST, ENV_RUNS, PACKAGE_DIR, cache_dir

from .handout import render_offline
from .install import CHECKOUT, CPU_INDEX, torch_requirement

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# name -> pip --platform tag (pip expands it to older compatible tags), marker environment
TARGETS = {
    "linux-x86_64": (
        "manylinux_2_28_x86_64",
        {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "platform_machine": "x86_64",
        },
    ),
    "windows-x86_64": (
        "win_amd64",
        {
            "sys_platform": "win32",
            "platform_system": "Windows",
            "os_name": "nt",
            "platform_machine": "AMD64",
        },
    ),
    "macos-arm64": (
        "macosx_12_0_arm64",
        {
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "os_name": "posix",
            "platform_machine": "arm64",
        },
    ),
    "macos-x86_64": (
        "macosx_12_0_x86_64",
        {
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "os_name": "posix",
            "platform_machine": "x86_64",
        },
    ),
}
TARGET_CONSTRAINTS = {
    "macos-x86_64": ["torch<2.3", "numpy<2"]
}  # torch 2.2.2: the last Intel-Mac build
KIT_EXTRAS = ("lab", "federated")
FEDERATED_PYTHON = (
    3,
    11,
)  # flwr 1.39 needs it (pyproject's marker); older Pythons get craftlib[lab] only


def here() -> tuple[str, str]:
    """This machine's target name and Python version (``--platforms here --pythons here``)."""
    machine = platform.machine().lower()
    system = platform.system()
    if system == "Windows":
        name = "windows-x86_64"
    elif system == "Darwin":
        name = "macos-arm64" if machine in ("arm64", "aarch64") else "macos-x86_64"
    elif machine in ("x86_64", "amd64"):
        name = "linux-x86_64"
    else:
        raise ValueError(f"no room-kit target for {system} {machine}")
    return name, f"{sys.version_info.major}.{sys.version_info.minor}"


def _expand(names, choices, this: str) -> list[str]:
    names = list(names or ["all"])
    if names == ["all"]:
        return list(choices)
    out = [this if n == "here" else n for n in names]
    unknown = [n for n in out if n not in choices]
    if unknown:
        raise ValueError(f"unknown {unknown}; choose from {', '.join(choices)}, 'all' or 'here'")
    return out


# ---------------------------------------------------------------------------------------------
# wheels


def _wheel_tags(filename: str) -> set:
    from packaging.utils import parse_wheel_filename

    return set(parse_wheel_filename(filename)[3])


def pip_platforms(target: str) -> list[str]:
    """Every platform tag the target accepts, newest first: ``pip download --platform`` takes each
    one (pip does not expand ``manylinux_2_28`` to older glibc tags by itself)."""
    from packaging import tags

    tag, _ = TARGETS[target]
    if tag.startswith("manylinux_"):
        glibc_max, arch = int(tag.split("_")[2]), tag.split("_", 3)[3]
        return [f"manylinux_2_{v}_{arch}" for v in range(glibc_max, 16, -1)] + [
            f"manylinux2014_{arch}"
        ]
    if tag.startswith("macosx_"):
        _, major, minor, arch = tag.split("_", 3)
        return list(tags.mac_platforms((int(major), int(minor)), arch))
    return [tag]


def target_tags(target: str, python: str) -> set:
    """Every wheel tag a ``target`` machine with CPython ``python`` accepts."""
    from packaging import tags

    plats = pip_platforms(target)
    if plats[0].startswith("manylinux"):
        arch = TARGETS[target][0].split("_", 3)[3]
        plats = (
            plats
            + [f"manylinux_2_{v}_{arch}" for v in range(16, 4, -1)]
            + [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
        )
    major, minor = (int(x) for x in python.split("."))
    abi = f"cp{major}{minor}"
    return set(tags.cpython_tags((major, minor), [abi], plats)) | set(
        tags.compatible_tags((major, minor), abi, plats)
    )


def wheels_for(folder: Path, target: str, python: str) -> dict[str, Path]:
    """Installable wheels in ``folder`` for the target: canonical name -> newest file."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    ok = target_tags(target, python)
    found: dict[str, tuple] = {}
    for path in sorted(Path(folder).glob("*.whl")):
        name, version, _, wtags = parse_wheel_filename(path.name)
        if set(wtags) & ok:
            key = canonicalize_name(name)
            if key not in found or version > found[key][0]:
                found[key] = (version, path)
    return {k: v[1] for k, v in found.items()}


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8", "replace")
    return [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    ]


def missing_requirements(
    folder: Path,
    target: str,
    python: str,
    root: str = "craftlib",
    extras: tuple[str, ...] = ("lab",),
) -> list[str]:
    """Requirements the target needs (markers evaluated *for the target*) that no wheel in
    ``folder`` provides.

    Walks the dependency graph from ``root[extras]`` through the wheels present: what ``pip download
    --platform`` leaves out because it evaluated markers for this machine (e.g. Windows'
    ``colorama``).
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    major, minor = python.split(".")
    env = {
        **TARGETS[target][1],
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    have = wheels_for(folder, target, python)
    todo, seen, missing = [(canonicalize_name(root), set(extras))], set(), []
    while todo:
        name, wanted = todo.pop()
        if (name, tuple(sorted(wanted))) in seen:
            continue
        seen.add((name, tuple(sorted(wanted))))
        if name not in have:
            continue
        for spec in _requires(have[name]):
            req = Requirement(spec)
            envs = [{**env, "extra": e} for e in [""] + sorted(wanted)]
            if req.marker is not None and not any(req.marker.evaluate(e) for e in envs):
                continue
            dep = canonicalize_name(req.name)
            if dep not in have:
                text = f"{req.name}{req.specifier}"
                if text not in missing:
                    missing.append(text)
            else:
                todo.append((dep, set(req.extras)))
    return missing


# ---------------------------------------------------------------------------------------------
# pins: what the instructor's environment holds


def environment_pins(
    root: str = "craftlib", extras: tuple[str, ...] = KIT_EXTRAS
) -> dict[str, tuple[str, str]]:
    """``name -> (version, Requires-Python)`` of every installed package in ``root[extras]``'s
    dependency closure.

    Read from the running environment's metadata (what ``pip freeze`` would list, less what the kit
    does not need, such as the test packages); markers are this machine's.
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    installed = {
        canonicalize_name(d.metadata["Name"]): d
        for d in metadata.distributions()
        if d.metadata["Name"]
    }
    todo, seen, pins = [(canonicalize_name(root), frozenset(extras))], set(), {}
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen or name not in installed:
            continue
        seen.add((name, wanted))
        dist = installed[name]
        if name != canonicalize_name(root):
            pins[name] = (dist.version, dist.metadata["Requires-Python"] or "")
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in ["", *sorted(wanted)]
            ):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return pins


def pins_for(
    pins: dict[str, tuple[str, str]], target: str, python: str
) -> tuple[list[str], dict[str, str]]:
    """The ``name==version`` constraints for one target and Python, and the packages left unpinned
    with why.

    A local label (``+cpu``) is dropped: the CPU and CUDA builds of one torch version are the same
    release. Left unpinned: what the target's own limits name (Intel Macs' torch and NumPy) and what
    needs another Python than ``python``, checked at its first release (``x.y.0``): pip's
    ``--python-version x.y`` checks there too, and a learner's 3.11.2 must install what the kit
    carries (soupsieve 4.1 needs 3.11.5, say).
    """
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    limited = {
        canonicalize_name(Requirement(c).name): c for c in TARGET_CONSTRAINTS.get(target, [])
    }
    lines, unpinned = [], {}
    for name, (version, requires) in sorted(pins.items()):
        if name in limited:
            unpinned[name] = f"{version} is held back by {limited[name]} on {target}"
        elif requires and not SpecifierSet(requires).contains(Version(python)):
            unpinned[name] = f"{version} needs Python {requires}"
        else:
            lines.append(f"{name}=={Version(version).public}")
    return lines, unpinned


def kit_extras(python: str) -> tuple[str, ...]:
    """craftlib's extras whose wheels the kit carries for ``python``: Flower's only where it
    installs."""
    major, minor = (int(x) for x in python.split("."))
    return KIT_EXTRAS if (major, minor) >= FEDERATED_PYTHON else ("lab",)


def wheel_plan(
    targets: list[str],
    pythons: list[str],
    pins: dict[str, tuple[str, str]],
    torch_spec: str | None = None,
    torch_index: str | None = None,
) -> list[dict]:
    """What ``download_wheels`` asks pip for, per target and Python (no network: tests read it as it
    is).

    Each entry: ``constraints`` (the target's limits, then the pins), ``extras``, ``cpu_torch`` (the
    requirement fetched from ``torch_index`` first on Linux, or None) and ``unpinned``.
    ``torch_spec`` overrides the pinned torch (the default: the environment's version, or
    pyproject's range where it is not pinned).
    """
    index = CPU_INDEX if torch_index is None else torch_index
    plan = []
    for target in targets:
        for python in pythons:
            lines, unpinned = pins_for(pins, target, python)
            torch_pin = next((line for line in lines if line.startswith("torch==")), None)
            if torch_spec:
                lines = [line for line in lines if not line.startswith("torch==")] + [torch_spec]
            spec = torch_spec or torch_pin or torch_requirement()
            plan.append(
                {
                    "target": target,
                    "python": python,
                    "extras": kit_extras(python),
                    "constraints": [*TARGET_CONSTRAINTS.get(target, []), *lines],
                    "cpu_torch": spec if target.startswith("linux") and index else None,
                    "index": index,
                    "unpinned": unpinned,
                }
            )
    return plan


def _pip_download(args: list[str], log) -> int:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        *args,
    ]
    shown = [
        a for i, a in enumerate(cmd) if a != "--platform" and (i == 0 or cmd[i - 1] != "--platform")
    ]
    log("$ " + " ".join(shown) + " (--platform ...)")
    return subprocess.call(cmd)


def download_wheels(
    wheels: Path,
    targets: list[str],
    pythons: list[str],
    torch_spec: str | None = None,
    torch_index: str | None = None,
    log=print,
    pins: dict[str, tuple[str, str]] | None = None,
) -> dict:
    """craftlib's wheel and every dependency for each (target, Python), at ``pins`` (default: this
    environment's, ``environment_pins``); returns what was built, what failed and why, and what was
    left unpinned."""
    wheels.mkdir(parents=True, exist_ok=True)
    for old in wheels.glob("craftlib-*.whl"):
        old.unlink()
    code = subprocess.call(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(wheels),
            str(CHECKOUT),
        ]
    )
    own = next(iter(wheels.glob("craftlib-*.whl")), None)
    if code or own is None:
        raise RuntimeError(f"could not build craftlib's wheel from {CHECKOUT}")
    pins = environment_pins() if pins is None else pins
    done, failed, unpinned = [], {}, {}
    for step in wheel_plan(targets, pythons, pins, torch_spec, torch_index):
        key, target, python = f"{step['target']}/{step['python']}", step["target"], step["python"]
        unpinned[key] = step["unpinned"]
        flags = [
            "--dest",
            str(wheels),
            "--find-links",
            str(wheels),
            "--only-binary=:all:",
            *[x for plat in pip_platforms(target) for x in ("--platform", plat)],
            "--python-version",
            python,
            "--implementation",
            "cp",
        ]
        constraints = list(step["constraints"])
        if step["cpu_torch"]:  # the CPU-only build from PyTorch's own index
            if _pip_download(
                flags + ["--no-deps", "--index-url", step["index"], step["cpu_torch"]], log
            ):
                failed[key] = f"no CPU torch matching {step['cpu_torch']} on {step['index']}"
                continue
            torch_here = wheels_for(wheels, target, python).get("torch")
            if torch_here is not None:
                constraints.append(f"torch=={torch_here.name.split('-')[1]}")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as c:
            c.write("\n".join(constraints) + "\n")
        try:
            requirement = f"craftlib[{','.join(step['extras'])}] @ {own.resolve().as_uri()}"
            if _pip_download(flags + ["-c", c.name, requirement], log):
                failed[key] = "pip download failed (no wheel for some dependency; see the log)"
                continue
            for _ in range(5):  # platform-only dependencies, then theirs
                extra = missing_requirements(wheels, target, python, extras=step["extras"])
                if not extra:
                    break
                log(f"{key}: adding what its markers need: {', '.join(extra)}")
                if _pip_download(flags + ["--no-deps", "-c", c.name, *extra], log):
                    failed[key] = f"could not download {', '.join(extra)}"
                    break
            else:
                failed[key] = "dependency closure did not settle"
        finally:
            os.unlink(c.name)
        if key not in failed:
            done.append(key)
    return {
        "built": done,
        "failed": failed,
        "craftlib_wheel": own.name,
        "pinned": len(pins),
        "unpinned": unpinned,
    }


# ---------------------------------------------------------------------------------------------
# data, runs, notebooks


def copy_lfw(source: Path, dest: Path, people: int | None = None) -> dict:
    """Copy an LFW folder (image folder + pair files); ``people`` keeps DevTest's images + that many
    training identities."""
    from craftlib.data import LFW, PAIR_FILES, read_pairs

    lfw = LFW(source, download=False)
    image_dest = dest / lfw.image_root.name
    files: list[str] = []
    if people is None:
        names = sorted(lfw.people)
        files = [f"{n}/{f}" for n in names for f in lfw.people[n]]
    else:
        pairs = read_pairs(lfw.pair_file("devtest"))
        keep = sorted({x for p in pairs for x in (p.left, p.right)})
        banned = lfw.pair_identities("devtest")
        train = [n for n, f in lfw.people.items() if len(f) >= 2 and n not in banned][:people]
        files = sorted(set(keep) | {f"{n}/{f}" for n in train for f in lfw.people[n]})
    for rel in files:
        target = image_dest / rel
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lfw.image_root / rel, target)
    for name in PAIR_FILES.values():
        shutil.copy2(
            lfw.pair_file(next(k for k, v in PAIR_FILES.items() if v == name)), dest / name
        )
    for extra in ("PROVENANCE.md", "omitted_images.txt"):
        if (lfw.root / extra).is_file():
            shutil.copy2(lfw.root / extra, dest / extra)
    return {
        "variant": lfw.variant,
        "evidence": lfw.variant_info.evidence,
        "images": len(files),
        "subset": people is not None,
    }


def execute_notebooks(
    names: list[str] | None, kit: Path, variant: str, fast: bool, log=print
) -> dict:
    """Run the kit's notebooks against the kit's LFW, keeping their runs in ``runs/<variant>``;
    render HTML."""
    from .notebooks import execute, list_notebooks

    paths = list_notebooks(names, folder=kit / "notebooks")
    env = {
        ENV_DATA: str(kit / "data" / "lfw"),
        ENV_RUNS: str(kit / "runs" / variant),
        ENV_FAST: "1" if fast else "0",
        ENV_CACHE: str(cache_dir()),
    }
    times = {}
    with tempfile.TemporaryDirectory() as executed, patch.dict(os.environ, env):
        for path in paths:
            log(f"executing {path.name} ({'FAST' if fast else 'full'} mode) ...")
            nb, seconds = execute(path, Path(executed), fast=fast)
            render_offline(nb, kit / "handout" / f"{path.stem}.html")
            times[path.stem] = round(seconds, 1)
            log(f"  {path.stem}: {seconds:.0f} s -> handout/{path.stem}.html")
    return times


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


README = """# Room kit: the CRAFT face-recognition workshop, offline

Everything for the workshop is in this folder: no internet needed. Built {built} with craftlib {version}.

## 1. Install (5-10 minutes, no network)

You need Python {pythons} (python.org or your system's; on Windows tick "Add python.exe to PATH").
Open a terminal *in this folder* and run, for your system:

**Windows (PowerShell)**

    py -m venv .venv
    .venv\\Scripts\\python -m pip install --no-index --find-links wheels "craftlib[lab]"

**macOS / Linux**

    python3 -m venv .venv
    .venv/bin/python -m pip install --no-index --find-links wheels "craftlib[lab]"

Wheels are included for: {targets}, at the versions the instructor tested.{failed}
For notebook 08's Flower part (Python 3.11 or newer), install `"craftlib[lab,federated]"` the same way.

## 2. Point craftlib at the kit's data and runs

**Windows (PowerShell)**

    $env:CRAFTLIB_DATA = "$PWD\\data\\lfw"; $env:CRAFTLIB_RUNS = "$PWD\\runs\\{variant}"

**macOS / Linux**

    export CRAFTLIB_DATA="$PWD/data/lfw" CRAFTLIB_RUNS="$PWD/runs/{variant}"

(Set them again in every new terminal.) Pre-trained runs are in `runs/{variant}/`: they were made on
this kit's LFW ({variant_label}), and craftlib only reuses a run made on the same variant.

## 3. Check, then start

    python -m craftlib check                          # one OK / FAIL line per item, ~30 s
    python -m craftlib lab --notebooks notebooks --workspace workspace   # JupyterLab on your copy in workspace/

(use `.venv\\Scripts\\python` or `.venv/bin/python` for `python`, or activate the venv first).
If the widgets do not show, or you cannot install: open `handout/` in a browser. Its pages are the
notebooks executed {mode}, with their outputs and the widgets' saved state, and work offline.

## What is inside

| folder | what |
|---|---|
| `wheels/` | craftlib and every package it needs ({n_wheels} wheels, {wheels_mb:.0f} MB) |
| `data/lfw/` | Labeled Faces in the Wild, {variant_label} ({n_images:,} images{subset}) |
| `runs/{variant}/` | runs the notebooks trained while this kit was built |
| `notebooks/` | the workshop notebooks, clean |
| `handout/` | the same notebooks executed, as offline HTML |
| `licenses/` | licences and notices of what is redistributed here |

## Terms

- **LFW** (Huang, Ramesh, Berg, Learned-Miller, UMass Amherst TR 07-49, 2007; deep-funneled images:
  Huang, Mattar, Lee, Learned-Miller, NIPS 2012) is published for research without a formal licence;
  the photographs' copyright stays with their photographers. Use it in this workshop only, and do not
  copy it further or publish it.
- **MobileFaceNet first layer** (inside craftlib: `craftlib/assets/`): from GitHub foamliu/MobileFaceNet,
  Apache-2.0; see `licenses/NOTICE-mobilefacenet` and `licenses/LICENSE-Apache-2.0.txt`.
- **JavaScript** in `handout/static/`: @jupyter-widgets/html-manager (BSD-3-Clause), RequireJS (MIT),
  MathJax 2.7.7 (Apache-2.0).
"""  # noqa: E501  (the kit's README, as learners read it)


def build_kit(
    out: str | os.PathLike,
    platforms=("all",),
    pythons=("all",),
    lfw: str | os.PathLike | None = None,
    lfw_people: int | None = None,
    notebooks: list[str] | None = None,
    fast: bool = False,
    runs: str | os.PathLike | None = None,
    torch_spec: str | None = None,
    torch_index: str | None = None,
    html: bool = True,
    wheels: bool = True,
    log=print,
) -> dict:
    """Build the room kit in ``out`` (see the module's docstring); return its manifest.

    The CI-sized form: ``platforms=["here"], pythons=["here"], lfw_people=20, notebooks=["02"],
    fast=True``.
    """
    from craftlib import __version__
    from craftlib.data import VARIANT_LABELS, find_lfw

    from .notebooks import NOTEBOOK_DIR

    start = time.perf_counter()
    kit = Path(out).resolve()
    kit.mkdir(parents=True, exist_ok=True)
    this_target, this_python = here()
    targets = _expand(platforms, TARGETS, this_target)
    versions = _expand(pythons, PYTHONS, this_python)
    manifest: dict = {
        "craftlib": __version__,
        "built": time.strftime("%Y-%m-%d %H:%M"),
        "targets": targets,
        "pythons": versions,
        "fast": fast,
    }

    log(
        "LFW: copying"
        + (f" DevTest's images and {lfw_people} training identities" if lfw_people else "")
    )
    manifest["lfw"] = copy_lfw(find_lfw(lfw, download=False), kit / "data" / "lfw", lfw_people)
    variant = manifest["lfw"]["variant"]

    nb_dir = kit / "notebooks"
    nb_dir.mkdir(exist_ok=True)
    for nb in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        shutil.copy2(nb, nb_dir / nb.name)
    lic = kit / "licenses"
    lic.mkdir(exist_ok=True)
    shutil.copy2(PACKAGE_DIR / "assets" / "NOTICE", lic / "NOTICE-mobilefacenet")
    shutil.copy2(PACKAGE_DIR / "assets" / "LICENSE-Apache-2.0.txt", lic / "LICENSE-Apache-2.0.txt")

    run_dir = kit / "runs" / variant
    run_dir.mkdir(parents=True, exist_ok=True)
    if runs:
        shutil.copytree(runs, run_dir, dirs_exist_ok=True)

    if wheels:
        t = time.perf_counter()
        manifest["wheels"] = download_wheels(
            kit / "wheels", targets, versions, torch_spec, torch_index, log
        )
        manifest["wheels"]["seconds"] = round(time.perf_counter() - t, 1)
    if html:
        manifest["notebook_seconds"] = execute_notebooks(notebooks, kit, variant, fast, log)
        static = kit / "handout" / "static"
        for src, name in (
            (static / "licenses" / "requirejs-LICENSE", "requirejs-LICENSE"),
            (static / "html-manager" / "embed.js.LICENSE.txt", "html-manager-LICENSES.txt"),
            (static / "mathjax" / "LICENSE", "mathjax-LICENSE"),
        ):
            if src.is_file():
                shutil.copy2(src, lic / name)

    n_wheels = len(list((kit / "wheels").glob("*.whl"))) if (kit / "wheels").is_dir() else 0
    sizes = {
        name: _size(kit / name)
        for name in ("wheels", "data", "runs", "handout")
        if (kit / name).exists()
    }
    manifest["sizes_mb"] = {k: round(v / 1e6, 1) for k, v in sizes.items()}
    failed = manifest.get("wheels", {}).get("failed", {})
    text = README.format(
        built=manifest["built"],
        version=__version__,
        pythons=", ".join(versions),
        targets=", ".join(targets),
        failed=(
            "\nNot included: " + "; ".join(f"{k} ({v})" for k, v in failed.items())
            if failed
            else ""
        ),
        variant=variant,
        variant_label=VARIANT_LABELS.get(variant, variant),
        n_wheels=n_wheels,
        wheels_mb=sizes.get("wheels", 0) / 1e6,
        n_images=manifest["lfw"]["images"],
        subset=", a CI-sized subset" if lfw_people else "",
        mode="in FAST mode (CI: numbers mean nothing)" if fast else "in full mode",
    )
    (kit / "README.md").write_text(text, encoding="utf-8")
    manifest["seconds"] = round(time.perf_counter() - start, 1)
    manifest["summary"] = (
        f"{n_wheels} wheels, LFW {variant} ({manifest['lfw']['images']} images), "
        f"{len(manifest.get('notebook_seconds', {}))} HTML page(s), "
        f"{sum(sizes.values()) / 1e6:.0f} MB, {manifest['seconds'] / 60:.1f} min"
    )
    (kit / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
