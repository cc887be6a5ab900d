"""What this machine offers the workshop: versions, threads, data, weights, widgets and speed.

``environment_report()`` lists facts (nothing is downloaded); ``run_checks()`` turns them into the
verdicts ``python -m craftlib check`` prints, one OK / FAIL line per item with its reason. Heavy
imports happen inside the checks, so a broken torch or a missing package is itself a FAIL line,
not a traceback.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from craftlib import __version__
from craftlib.paths import (
    ENV_DATA,
    ENV_MODELS,
    IS_CHECKOUT,
    REPO_ROOT,
    cache_dir,
    fast_mode,
    file_sha256,
)

SUPPORTED_PYTHONS = ((3, 10), (3, 13))  # oldest and newest minor version craftlib supports
WIDGET_FRONTEND = "@jupyter-widgets/jupyterlab-manager"
FRONTEND_FOR_IPYWIDGETS = {7: "3", 8: "5"}  # ipywidgets major -> jupyterlab-manager major it needs
SPEED_BUDGET_S = 20.0
TOO_SLOW_MIN = 15.0  # a workshop run predicted slower than this cannot fit the sessions


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> dict[str, str]:
    """What a learner (or an instructor checking a room of laptops) needs to know before starting.

    Versions, the device and threads torch will use, FAST mode, and where LFW and the released
    MobileFaceNet weights were found (nothing is downloaded here).
    """
    import matplotlib
    import numpy
    import torch

    from craftlib.data import LFWNotFoundError, find_lfw
    from craftlib.pretrained import ModelNotFoundError, find_mobilefacenet
    from craftlib.runtime import pick_device

    report = {
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "craftlib": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "ipywidgets": _version("ipywidgets"),
        "jupyterlab_widgets": _version("jupyterlab_widgets"),
        "device": str(pick_device()),
        "torch threads": str(torch.get_num_threads()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "CPU cores": str(os.cpu_count()),
        "FAST mode": str(fast_mode()),
    }
    try:
        report["LFW"] = str(find_lfw(download=False))
    except LFWNotFoundError:
        report["LFW"] = f"NOT FOUND (set ${ENV_DATA}; see craftlib.data.HOW_TO_GET_LFW)"
    try:
        report["MobileFaceNet"] = str(find_mobilefacenet(download=False))
    except ModelNotFoundError:
        report["MobileFaceNet"] = (
            f"NOT FOUND (optional: set ${ENV_MODELS}; the stem notebook 02 uses ships with "
            "craftlib)"
        )
    report["face cache"] = str(cache_dir())
    return report


# ---------------------------------------------------------------------------------------------
# checks: one verdict per item


@dataclass
class Check:
    """One line of ``python -m craftlib check``: ``status`` is ``OK``, ``FAIL`` or ``NOTE`` (never
    fails)."""

    name: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"


def in_colab() -> bool:
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


def check_python(version: tuple[int, int] | None = None) -> Check:
    v = tuple(version or sys.version_info[:2])
    lo, hi = SUPPORTED_PYTHONS
    text = f"{v[0]}.{v[1]} ({platform.python_implementation()}, {sys.executable})"
    if lo <= v <= hi:
        return Check("python", "OK", text)
    return Check(
        "python",
        "FAIL",
        f"{text}: craftlib supports Python {lo[0]}.{lo[1]}-{hi[0]}.{hi[1]}; "
        f"install one of those and run `python -m craftlib setup` with it",
    )


def requirements(extras: tuple[str, ...] = ("lab",)) -> list:
    """craftlib's requirements (``packaging`` objects) that apply here, with the given extras."""
    from packaging.requirements import Requirement

    try:
        specs = metadata.requires("craftlib") or []
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        import tomllib  # Python >= 3.11; an uninstalled 3.10 checkout is reported as not installed

        project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
        specs = list(project["dependencies"]) + [
            f"{s}; extra == '{e}'"
            for e, group in project["optional-dependencies"].items()
            for s in group
        ]
    out = []
    for spec in specs:
        req = Requirement(spec)
        envs = [{"extra": e} for e in ("",) + tuple(extras)]
        if req.marker is None or any(req.marker.evaluate(env) for env in envs):
            out.append(req)
    return out


def check_packages(extras: tuple[str, ...] = ("lab",)) -> Check:
    """Every requirement installed, at a version inside its range (``extras``: also those
    groups)."""
    try:
        reqs = requirements(extras)
    except Exception as err:  # craftlib not installed and no pyproject to read
        return Check(
            "packages",
            "FAIL",
            f"cannot read craftlib's requirements ({err}); run `python -m craftlib setup`",
        )
    bad, seen = [], {}
    for req in reqs:
        have = _version(req.name)
        if have == "not installed":
            bad.append(f"{req.name} is not installed (needs {req.specifier or 'any version'})")
        elif req.specifier and not req.specifier.contains(have, prereleases=True):
            bad.append(f"{req.name} {have} is outside {req.specifier}")
        seen[req.name] = have
    if bad:
        return Check("packages", "FAIL", "; ".join(bad) + " -> run `python -m craftlib setup`")
    keys = ("torch", "numpy", "scikit-learn", "ipywidgets", "jupyterlab")
    listed = ", ".join(f"{k} {seen[k]}" for k in keys if k in seen)
    return Check("packages", "OK", f"{len(seen)} requirements inside their ranges ({listed}, ...)")


def check_torch() -> Check:
    try:
        import torch

        from craftlib.runtime import pick_device

        x = torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8), torch.ones(4, 3, 3, 3))
        assert float(x.sum()) > 0
    except Exception as err:
        return Check(
            "torch",
            "FAIL",
            f"import or a first convolution failed ({type(err).__name__}: {err}); "
            "reinstall with `python -m craftlib setup`",
        )
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    threads, cores = torch.get_num_threads(), os.cpu_count()
    omp = os.environ.get("OMP_NUM_THREADS")
    detail = (
        f"torch {torch.__version__} ({build}), device {pick_device()}, {threads} thread(s) on "
        f"{cores} core(s)" + (f", OMP_NUM_THREADS={omp}" if omp else "")
    )
    return Check("torch", "OK", detail)


def check_threads() -> Check:
    """The thread policy (``craftlib.threads``): torch's threads and whether idle ones sleep; a
    NOTE, never a FAIL."""
    import torch

    from craftlib.threads import describe

    effective, text = describe()
    detail = f"{torch.get_num_threads()} torch thread(s) on {os.cpu_count()} core(s); {text}"
    return Check("threads", "OK" if effective else "NOTE", detail)


def check_lfw(path: str | os.PathLike | None = None) -> list[Check]:
    """Three lines: where LFW is (images, people), its variant (FAIL if not the docs'), its pair
    files' checksums."""
    from craftlib.data import (
        DOCS_VARIANT,
        LFW,
        PAIR_FILES,
        PAIR_SHA256,
        VARIANT_LABELS,
        LFWNotFoundError,
        variant_note,
    )

    try:
        lfw = LFW(path, download=False)
    except LFWNotFoundError as err:
        first = str(err).splitlines()[0]
        reason = (
            f"{first} Set {ENV_DATA} to an LFW folder (an instructor's copy or a room kit's "
            f"data/lfw), "
            "or let notebook 00 download it (about 230 MB, needs the internet)"
        )
        return [Check("LFW", "FAIL", reason)]
    n_images = sum(len(f) for f in lfw.people.values())
    checks = [
        Check("LFW", "OK", f"{n_images:,} images of {len(lfw.people):,} people in {lfw.image_root}")
    ]
    info = lfw.variant_info
    label = VARIANT_LABELS.get(info.name, info.name)
    if info.name == DOCS_VARIANT:
        checks.append(Check("LFW variant", "OK", f"{label} ({info.evidence})"))
    else:
        checks.append(
            Check("LFW variant", "FAIL", f"{label} ({info.evidence}): {variant_note(info.name)}")
        )
    bad, good = [], []
    for name in PAIR_FILES.values():
        try:
            file = next(
                f / name
                for f in (lfw.root, lfw.image_root, lfw.image_root.parent)
                if (f / name).is_file()
            )
        except StopIteration:
            bad.append(f"{name} missing")
            continue
        (good if file_sha256(file) == PAIR_SHA256[name] else bad).append(
            name
            if file_sha256(file) == PAIR_SHA256[name]
            else f"{name} differs from the official file"
        )
    if bad:
        checks.append(
            Check("LFW pair files", "FAIL", "; ".join(bad) + " (re-copy the official pair files)")
        )
    else:
        checks.append(
            Check("LFW pair files", "OK", f"{', '.join(good)}: SHA-256 of the official files")
        )
    return checks


def check_stem() -> list[Check]:
    from craftlib.pretrained import (
        ModelNotFoundError,
        find_mobilefacenet,
        mobilefacenet_stem,
        stem_state,
    )

    try:
        _, source = stem_state()
        stem = mobilefacenet_stem()
        w = stem[0].weight.detach().flatten(1).abs().amax(1)
        dead = int((w < 0.1 * w.max()).sum())
        out = [
            Check(
                "MobileFaceNet stem",
                "OK",
                f"{dead} of 64 conv1 filters inactive (max|w| < 0.1 of the strongest); "
                f"from {source}",
            )
        ]
    except Exception as err:
        out = [Check("MobileFaceNet stem", "FAIL", f"{type(err).__name__}: {err}")]
    try:
        out.append(
            Check(
                "MobileFaceNet full",
                "NOTE",
                f"optional full weights at {find_mobilefacenet(download=False)}",
            )
        )
    except ModelNotFoundError:
        out.append(
            Check(
                "MobileFaceNet full",
                "NOTE",
                f"optional full weights not on disk (not needed: the stem ships "
                f"with craftlib; ${ENV_MODELS} points at them when you have them)",
            )
        )
    return out


def widget_frontends() -> dict[str, str]:
    """``jupyterlab-manager`` copies JupyterLab would load: folder -> version (empty when none)."""
    try:
        from jupyter_core.paths import jupyter_path
    except ImportError:
        return {}
    import json

    found = {}
    for folder in jupyter_path("labextensions"):
        pkg = Path(folder) / WIDGET_FRONTEND / "package.json"
        if pkg.is_file():
            try:
                found[str(pkg.parent)] = json.loads(pkg.read_text()).get("version", "?")
            except (OSError, ValueError):
                found[str(pkg.parent)] = "unreadable"
    return found


def check_widgets(frontends: dict[str, str] | None = None) -> Check:
    """ipywidgets importable and a frontend that renders it: Colab's, or the installed JupyterLab's
    extension."""
    have = _version("ipywidgets")
    if have == "not installed":
        return Check(
            "widgets", "FAIL", "ipywidgets is not installed: `pip install 'ipywidgets>=7.6,<9'`"
        )
    major = int(have.split(".")[0])
    if in_colab():
        return Check("widgets", "OK", f"ipywidgets {have}, rendered by Colab's own widget frontend")
    lab = _version("jupyterlab")
    if lab == "not installed":
        return Check(
            "widgets",
            "FAIL",
            f"ipywidgets {have}, but JupyterLab is not installed, so nothing renders "
            "the widgets here: `python -m craftlib setup` (or pip install 'craftlib[lab]')",
        )
    frontends = widget_frontends() if frontends is None else frontends
    need = FRONTEND_FOR_IPYWIDGETS.get(major)
    if not frontends:
        return Check(
            "widgets",
            "FAIL",
            f"JupyterLab {lab} has no {WIDGET_FRONTEND} extension, so widgets would show "
            f"as plain text: pip install 'jupyterlab_widgets>=3,<4' (ipywidgets {have})",
        )
    versions = sorted(set(frontends.values()))
    if need and not any(v.split(".")[0] == need for v in versions):
        return Check(
            "widgets",
            "FAIL",
            f"ipywidgets {have} needs {WIDGET_FRONTEND} {need}.x, but JupyterLab {lab} has "
            f"{', '.join(versions)}: install matching versions (`python -m craftlib setup`)",
        )
    where = next(iter(frontends))
    return Check(
        "widgets",
        "OK",
        f"ipywidgets {have}; JupyterLab {lab} with {WIDGET_FRONTEND} {frontends[where]} ({where})",
    )


def speed_probe(
    seconds: float = SPEED_BUDGET_S, recipe=None, images: int = 6968, classes: int = 1262
) -> dict:
    """Time training steps of the workshop recipe on random faces; predict one workshop run.

    The model, batch, optimizer and threads are the workshop's (``recipes.WORKSHOP``) and the head
    has its 1,262 identities, so a step here costs what a step there costs; a few warm-up steps are
    not timed. Returns the seconds per step, the steps of one run and the predicted minutes, also in
    CPU time (``cpu_minutes``: on a shared machine it compares with a run's CPU time whatever the
    load). ``benchmarks/speed_probe.py`` checks the prediction against full runs
    (docs/results/speed_probe.json).
    """
    import numpy as np

    from craftlib.data import FaceSet
    from craftlib.recipes import WORKSHOP
    from craftlib.training import Trainer

    recipe = recipe or WORKSHOP
    config = recipe.train
    size = config.model.input_size
    rng = np.random.default_rng(0)
    labels = np.arange(images) % classes
    faces = FaceSet(
        rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8),
        labels,
        [f"p{i}" for i in range(classes)],
        [f"p{c}/x.jpg" for c in labels],
        variant="synthetic",
    )
    start = time.perf_counter()
    trainer = Trainer(faces, config, progress=False)
    # warm-up, not timed: a fresh model's first steps cost up to 2x (allocations)
    trainer.train_steps(3)
    timed, t0, c0 = 0, time.perf_counter(), time.process_time()
    while timed < 1 or (
        time.perf_counter() - start < seconds and timed < trainer.steps_per_epoch - 3
    ):
        trainer.train_steps(1)
        timed += 1
    per_step, cpu_step = (time.perf_counter() - t0) / timed, (time.process_time() - c0) / timed
    t1, c1 = time.perf_counter(), time.process_time()
    # what every epoch end adds (conv1 snapshot on the probe)
    trainer._record(loss=0.0, acc=0.0, seconds=0.0)
    per_epoch, cpu_epoch = time.perf_counter() - t1, time.process_time() - c1
    steps = trainer.steps_per_epoch * config.epochs
    total = steps * per_step + config.epochs * per_epoch
    return {
        "seconds_per_step": per_step,
        "steps": steps,
        "epochs": config.epochs,
        "timed_steps": timed,
        "minutes": total / 60,
        "cpu_minutes": (steps * cpu_step + config.epochs * cpu_epoch) / 60,
        "probe_seconds": time.perf_counter() - start,
        "recipe": recipe.name,
    }


def check_speed(seconds: float = SPEED_BUDGET_S, probe: Callable[..., dict] = speed_probe) -> Check:
    try:
        r = probe(seconds)
    except Exception as err:
        return Check("speed", "FAIL", f"the training probe failed ({type(err).__name__}: {err})")
    text = (
        f"one '{r['recipe']}' training run (the workshop's) would take about {r['minutes']:.1f} "
        f"min here "
        f"({r['steps']} steps at {r['seconds_per_step'] * 1000:.0f} ms; measured "
        f"{r['timed_steps']} steps in "
        f"{r['probe_seconds']:.0f} s)"
    )
    if r["minutes"] > TOO_SLOW_MIN:
        return Check(
            "speed",
            "FAIL",
            text + f": too slow for the sessions (over {TOO_SLOW_MIN:.0f} min); close other "
            "programs, use Colab, or run the notebooks with CRAFT_FAST=1",
        )
    return Check("speed", "OK", text)


def run_checks(
    data: str | os.PathLike | None = None,
    speed: bool = True,
    seconds: float = SPEED_BUDGET_S,
    extras: tuple[str, ...] = ("lab",),
    report: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Every check in order; ``report(check)`` is called as each one finishes (the CLI prints
    there)."""
    out: list[Check] = []

    def add(items):
        for c in items if isinstance(items, list) else [items]:
            out.append(c)
            if report is not None:
                report(c)

    add(check_python())
    add(check_packages(() if in_colab() else extras))
    add(check_torch())
    torch_ok = out[-1].ok
    if torch_ok:
        add(check_threads())
    add(check_lfw(data) if torch_ok else Check("LFW", "FAIL", "not checked: torch does not work"))
    add(
        check_stem()
        if torch_ok
        else Check("MobileFaceNet stem", "FAIL", "not checked: torch does not work")
    )
    add(check_widgets())
    try:
        cache = cache_dir()
        probe = cache / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        add(Check("face cache", "OK", f"{cache} is writable"))
    except OSError as err:
        add(
            Check(
                "face cache",
                "FAIL",
                f"cannot write the face cache ({err}); set CRAFTLIB_CACHE to a writable folder",
            )
        )
    if not IS_CHECKOUT:
        add(
            Check(
                "work folder",
                "NOTE",
                f"installed package (not a checkout): runs and caches go to {REPO_ROOT}",
            )
        )
    if speed:
        add(
            check_speed(seconds)
            if torch_ok
            else Check("speed", "FAIL", "not measured: torch does not work")
        )
    return out
