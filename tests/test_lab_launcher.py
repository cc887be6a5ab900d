"""``python -m craftlib lab`` opens one notebook — where the learner left off — not every tab of the
last session.

JupyterLab restores the previous session's tabs and starts a kernel for each (nine after a workshop
day); the launcher asks for ``/lab/tree/<notebook>?reset`` instead. The browser test starts the real
launcher twice on the same workspace, as a learner does before and after the break.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest

from craftlib.workshop.cli import main, notebook_to_open

from lab_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    NEEDS_CHROMIUM,
    free_port,
    quiet_lab_settings,
    until,
)

NAMES = ("00_setup.ipynb", "01_train.ipynb", "02_dying.ipynb", "03_lab.ipynb")


@pytest.fixture
def source(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in NAMES:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
        nbformat.write(nb, folder / name)
    return folder


def test_a_fresh_copy_opens_the_first_notebook_then_the_one_saved_last(source, tmp_path, capsys):
    workspace = tmp_path / "workspace"
    assert (
        main(["lab", "--notebooks", str(source), "--workspace", str(workspace), "--dry-run"]) == 0
    )
    assert "--LabApp.default_url=/lab/tree/00_setup.ipynb?reset" in capsys.readouterr().out
    saved = workspace / "02_dying.ipynb"
    os.utime(saved, (time.time() + 5, time.time() + 5))  # what JupyterLab's save does
    assert notebook_to_open(workspace, source) == "02_dying.ipynb"
    assert notebook_to_open(workspace, source, "03") == "03_lab.ipynb"


def test_an_unknown_notebook_or_an_empty_folder_is_a_clear_error(source, tmp_path, capsys):
    workspace = tmp_path / "workspace"
    assert (
        main(
            [
                "lab",
                "--notebooks",
                str(source),
                "--workspace",
                str(workspace),
                "--open",
                "09",
                "--dry-run",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no notebook '09'" in err and "00_setup.ipynb" in err
    with pytest.raises(FileNotFoundError, match="no workshop notebooks"):
        notebook_to_open(tmp_path, source)


@contextmanager
def launcher(source: Path, workspace: Path, home: Path, *options: str):
    """The real ``python -m craftlib lab`` on loopback (no browser of its own); yields (base url,
    token)."""
    token, port = secrets.token_hex(16), free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    with open(home / "jupyter.log", "a") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "craftlib",
                "lab",
                "--notebooks",
                str(source),
                "--workspace",
                str(workspace),
                *options,
                "--",
                "--no-browser",
                f"--ServerApp.token={token}",
                f"--ServerApp.port={port}",
                "--ServerApp.ip=127.0.0.1",
                "--allow-root",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        until(
            lambda: _answers(f"{base}/api/status?token={token}", server),
            bool,
            timeout=180,
            what="the launcher",
        )
        yield base, token
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(url: str, server: subprocess.Popen) -> bool:
    if server.poll() is not None:
        raise RuntimeError(f"the launcher exited with {server.returncode}")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def kernels(base: str, token: str) -> int:
    with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=10) as r:
        return len(json.loads(r.read()))


@pytest.mark.slow
@pytest.mark.browser
@NEEDS_CHROMIUM
def test_after_a_session_with_every_tab_open_the_launcher_opens_one_notebook(source, tmp_path):
    from playwright.sync_api import sync_playwright

    workspace, home = tmp_path / "workspace", tmp_path / "home"
    quiet_lab_settings(home / "config" / "lab" / "user-settings")
    tabs = ".lm-DockPanel-tabBar .lm-TabBar-tab"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1366, "height": 768},
        )
        page = context.new_page()
        with launcher(source, workspace, home) as (
            base,
            token,
        ):  # before the break: every notebook opened
            for name in NAMES:
                page.goto(f"{base}/lab/tree/{name}?token={token}")
                page.locator(f"{tabs}:has-text('{name}')").wait_for(timeout=60_000)
                time.sleep(3)  # JupyterLab saves its layout (the workspace) a moment after a change
            until(
                lambda: page.locator(tabs).count(), lambda n: n == len(NAMES), what="four open tabs"
            )
            until(lambda: kernels(base, token), lambda n: n == len(NAMES), what="a kernel per tab")
        # the notebook saved last
        os.utime(workspace / "02_dying.ipynb", (time.time() + 5, time.time() + 5))
        with launcher(source, workspace, home) as (
            base,
            token,
        ):  # after the break: what the browser opens
            page.goto(f"{base}/?token={token}")
            page.locator(".jp-NotebookPanel:visible").first.wait_for(timeout=60_000)
            time.sleep(3)  # a restored layout would have reopened its tabs by now
            assert page.locator(tabs).all_inner_texts() == ["02_dying.ipynb"]
            assert (
                until(lambda: kernels(base, token), lambda n: n >= 1, what="the notebook's kernel")
                == 1
            )
        context.close()


@pytest.mark.slow  # starts two processes
def test_stopping_the_launcher_stops_what_it_started(tmp_path):
    """``craftlib lab`` runs JupyterLab as a child: terminating the launcher (as a process manager
    or this suite does) must terminate JupyterLab too, not leave it serving with its kernels."""
    pidfile = tmp_path / "child.pid"
    child = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    launcher_code = (
        "import os, sys; from craftlib.workshop.cli import run_stoppable; "
        f"sys.exit(run_stoppable([sys.executable, '-c', {child!r}], dict(os.environ)))"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher_code])
    until(lambda: pidfile.is_file() and pidfile.read_text(), bool, timeout=60, what="the child")
    pid = int(pidfile.read_text())
    parent.terminate()
    assert parent.wait(timeout=30) != 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped by the launcher
