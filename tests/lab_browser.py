"""A real JupyterLab on loopback and Debian's Chromium driven by Playwright: the browser tests'
shared plumbing.

``running_lab`` starts ``jupyter lab`` (the venv's, so its kernel imports this craftlib) with a
random token, its config, data and runtime folders in a temporary folder, news and update checks off
and the notebook's own kernel started without a dialog; ``lab_page`` opens headless Chromium
(``playwright install`` cannot download browsers here, so ``executable_path`` points at the Debian
package); ``run_all`` runs every cell through the menus as a learner would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_lab_settings(settings_dir: Path) -> None:
    """No news toasts over the widgets, no kernel-choice dialog (start the notebook's own kernel),
    and every cell attached and rendered: JupyterLab's default windowing skips rendering off-screen
    cells, whose prompts then read as empty text."""
    for name, settings in (
        ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
        ("notebook-extension/tracker", {"autoStartDefaultKernel": True, "windowingMode": "none"}),
    ):
        path = settings_dir / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))


@contextmanager
def running_lab(root: Path, notebooks: list[Path], env: dict[str, str], timeout: float = 180):
    """JupyterLab serving copies of ``notebooks`` from ``root/work``; yields url(name), root and the
    log path."""
    work, home = root / "work", root / "home"
    work.mkdir(parents=True)
    for path in notebooks:
        shutil.copy(path, work / path.name)
    quiet_lab_settings(home / "config" / "lab" / "user-settings")
    token, port = secrets.token_hex(16), free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    # the venv's: its python3 kernel is the venv's python
    jupyter = Path(sys.executable).with_name("jupyter")
    log = root / "jupyter.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [
                str(jupyter),
                "lab",
                "--no-browser",
                f"--ServerApp.token={token}",
                f"--ServerApp.port={port}",
                "--ServerApp.ip=127.0.0.1",
                "--allow-root",
                f"--ServerApp.root_dir={work}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        until(
            lambda: _answers(f"http://127.0.0.1:{port}/api/status?token={token}", server, log),
            bool,
            timeout=timeout,
            what="jupyter lab answering",
        )
        yield {
            "url": lambda name: f"http://127.0.0.1:{port}/lab/tree/{name}?token={token}",
            "root": root,
            "log": log,
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _answers(url: str, server: subprocess.Popen, log: Path) -> bool:
    if server.poll() is not None:
        raise RuntimeError(
            f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}"
        )
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def lab_page(lab: dict, viewport: dict[str, int], failure: str):
    """A headless Chromium page (profile beside ``lab``'s files); on an error, a screenshot and the
    JupyterLab log go to ``test-artifacts/<failure>*``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(lab["root"] / "chromium"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=viewport,
        )
        page = context.new_page()
        try:
            yield page
        except Exception:
            keep_failure(page, lab["log"], failure)
            raise
        finally:
            context.close()


def until(read, ok, timeout: float = 120, what: str = "condition"):
    """Poll ``read()`` until ``ok(value)``; return the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.25)


def notebook(page):
    """The notebook on screen: JupyterLab restores the tabs a test opened before, hidden, with the
    same widgets."""
    return page.locator(".jp-NotebookPanel:visible").first


def quiet_kernel(page, quiet: float = 2.0, timeout: float = 300) -> None:
    """Wait until the kernel has been idle for ``quiet`` seconds: a freshly started one may still
    reconnect, and cells queued before that are silently dropped."""
    idle = notebook(page).locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    deadline, since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if idle.count():
            since = since or time.monotonic()
            if time.monotonic() - since >= quiet:
                return
        else:
            since = None
        time.sleep(0.25)
    raise TimeoutError(f"kernel not idle within {timeout} s")


def run_all(page, url: str, timeout: float = 1800) -> None:
    """Open ``url``, then Run → Run All Cells, and wait until every code cell has run and the kernel
    is quiet."""
    page.goto(url, timeout=120_000)
    notebook(page).wait_for(timeout=120_000)
    quiet_kernel(page, quiet=3.0)
    if page.locator(
        ".jp-Dialog"
    ).count():  # a kernel-choice dialog, should this JupyterLab still ask
        page.locator(".jp-Dialog .jp-mod-accept").click()
    sidebar = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    # fold the file browser away, when JupyterLab opened it (it restores the last layout)
    if sidebar.count():
        sidebar.first.click()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    prompts = notebook(page).locator(".jp-CodeCell .jp-InputArea-prompt")
    until(
        lambda: all(p.strip("[]: ").isdigit() for p in prompts.all_inner_texts()),
        bool,
        timeout=timeout,
        what="every cell executed",
    )
    quiet_kernel(page)


def shot(element, name: str) -> None:
    """A screenshot into ``test-artifacts/`` and, when ``$CRAFTLIB_SCREENSHOTS`` is set, into that
    folder too."""
    ARTIFACTS.mkdir(exist_ok=True)
    element.screenshot(path=str(ARTIFACTS / name))
    if os.environ.get("CRAFTLIB_SCREENSHOTS"):
        folder = Path(os.environ["CRAFTLIB_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / name, folder / name)


def keep_failure(page, log: Path, name: str) -> None:
    """After a failure: a full-page screenshot and the JupyterLab log in ``test-artifacts/``."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    shutil.copy(log, ARTIFACTS / f"{name}-jupyter.log")


WATCH = """el => {
  window.__craftChanged = null;
  window.__craftInput = null;
  const input = e => { if (window.__craftInput === null) window.__craftInput = e.timeStamp; };
  for (const kind of ["keydown", "mousedown", "input", "change"]) {
    document.addEventListener(kind, input, {capture: true, once: true});
  }
  window.__craftObserver = new MutationObserver(() => {
    if (window.__craftChanged === null) window.__craftChanged = performance.now();
  });
  window.__craftObserver.observe(el, {attributes: true, childList: true, subtree: true,
                                      characterData: true});
}"""


def latency_ms(page, watched, act, timeout: float = 60) -> float:
    """Milliseconds from the input event ``act()`` causes in the page (a key press, a click, a
    selection: its ``timeStamp``) to the first change of ``watched``: what a learner waits for,
    kernel round trip and drawing included, the test driver's own messages not. Watch the element
    a widget updates last (its count or status line)."""
    watched.element_handle().evaluate(WATCH)
    before = page.evaluate("performance.now()")
    act()
    page.wait_for_function("window.__craftChanged !== null", timeout=timeout * 1000)
    changed, start = page.evaluate(
        "() => { window.__craftObserver.disconnect();"
        " return [window.__craftChanged, window.__craftInput]; }"
    )
    return changed - (start if start is not None else before)


class Latencies:
    """Each control's measured latencies, written with the machine's load to
    ``test-artifacts/widget_latency.json`` (a record, whatever the verdicts)."""

    def __init__(self, name: str):
        self.path, self.samples = ARTIFACTS / f"{name}_latency.json", {}
        self.load_start = os.getloadavg()

    def add(self, control: str, ms: float) -> float:
        self.samples.setdefault(control, []).append(round(ms, 1))
        return ms

    def median(self, control: str) -> float:
        return statistics.median(self.samples[control])

    def write(self) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        report = {
            "load_average": {"start": self.load_start, "end": os.getloadavg()},
            "cores": os.cpu_count(),
            "controls": {
                c: {"median_ms": self.median(c), "ms": v} for c, v in self.samples.items()
            },
        }
        self.path.write_text(json.dumps(report, indent=1) + "\n")
        return self.path
