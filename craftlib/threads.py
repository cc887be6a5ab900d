"""The thread policy: how many threads a run uses and how OpenMP's idle threads wait, set before
torch starts.

Why: torch's CPU kernels run on an OpenMP pool whose idle threads, by default, *spin* (burn a core)
between parallel regions, and every step waits for its slowest thread. A learner's laptop is never
idle (a browser, a video call): measured on the project's 2-core machine, 2 threads fell from
334-449 img/s idle to 157 img/s beside one busy process, where 1 thread gave 288. With
``OMP_WAIT_POLICY=PASSIVE`` idle threads sleep at once and 2 threads gave 287 under the same load,
keeping the idle gain of a second core. So craftlib keeps torch's thread count (one per physical
core) and sets passive waiting; ``benchmarks/threads.py`` measures both sides (docs/PERFORMANCE.md).
Forked ``compare`` workers share the cores instead: one thread each (``worker_threads``).

OpenMP reads the variable once, when torch loads it, so the policy travels in the environment:
``apply`` before ``import torch`` (the command line does it first thing), ``kernel_env`` for the
kernels JupyterLab starts (the ``lab`` launcher); a value the user set always wins. Standard library
only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
"""What craftlib sets where the user has not: idle OpenMP threads sleep instead of spinning."""

_applied: dict[str, str] = {}  # what ``apply`` set in this process
_late = False  # ``apply`` ran after torch was imported: this process's OpenMP never saw the policy


def policy_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The policy's variables that ``environ`` does not set yet (a user's own choice is kept)."""
    return {k: v for k, v in POLICY.items() if k not in environ}


def apply(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Put the policy into this process's environment (and its children's); returns what was added.

    Call it before ``import torch``: afterwards it still reaches child processes, but not this one's
    OpenMP.
    """
    global _late
    added = policy_env(environ)
    environ.update(added)
    if environ is os.environ and added:
        _applied.update(added)
        _late = _late or "torch" in sys.modules
    return added


def kernel_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment for a process that will import torch itself (a Jupyter kernel): ``environ`` +
    the policy."""
    return {**environ, **policy_env(environ)}


def worker_threads(jobs: int, threads: int) -> int:
    """Threads for each of ``jobs`` runs sharing ``threads``: at least one, never more than their
    share."""
    return max(1, threads // max(1, jobs))


def describe(environ: Mapping[str, str] = os.environ) -> tuple[bool, str]:
    """Is the policy in effect in this process, and the sentence that says so (``python -m craftlib
    check``)."""
    value = environ.get("OMP_WAIT_POLICY")
    if value is None:
        return False, (
            "OMP_WAIT_POLICY is not set, so idle threads spin and training slows down whenever "
            "another "
            "program is busy; start JupyterLab with `python -m craftlib lab` (or set "
            "OMP_WAIT_POLICY=PASSIVE "
            "before Python starts)"
        )
    if _late and "OMP_WAIT_POLICY" in _applied:
        return False, (
            f"OMP_WAIT_POLICY={value} was set after torch was imported, so it applies to child "
            f"processes "
            "only; restart the kernel and import craftlib first (or use `python -m craftlib lab`)"
        )
    who = "craftlib's policy" if "OMP_WAIT_POLICY" in _applied else "from the environment"
    return (
        True,
        f"OMP_WAIT_POLICY={value} ({who}: idle threads "
        f"{'sleep' if value.upper() == 'PASSIVE' else 'spin'})",
    )
