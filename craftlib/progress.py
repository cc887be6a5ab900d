"""Progress bars that suit where they are shown: a live bar on a terminal, text in a notebook, lines
in a log.

Why not ``tqdm.auto``: in a notebook it draws *widget* bars, and a saved notebook keeps only a
reference to the widget's model, so after a reload every bar reads "Error displaying widget: model
not found"; in a log (CI, ``make demo > log``) a terminal bar's redraws are carriage-return frames,
hundreds of KB per demo. So ``progress_bar`` takes tqdm's arguments and picks, by ``where()``:

- ``terminal`` (stderr is a TTY): tqdm's own bar;
- ``notebook`` (an IPython kernel): one plain-text output per bar, redrawn in place and kept when
  the bar closes, so the saved notebook shows what ran (one line per epoch of training);
- ``log`` (anything else): one line when a bar closes and one every ``LOG_EVERY_S`` seconds while it
  runs.
"""

from __future__ import annotations

import io
import sys
import time

from tqdm.std import tqdm

LOG_EVERY_S = 30.0
"""Seconds between two lines of a running bar in a log (a bar that finishes sooner writes one
line)."""


def where() -> str:
    """``notebook``, ``terminal`` or ``log``: where progress bars go from this process."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if getattr(shell, "kernel", None) is not None:
        return "notebook"
    return "terminal" if getattr(sys.stderr, "isatty", lambda: False)() else "log"


class _Nowhere(io.TextIOBase):
    """A file that swallows tqdm's own writes (a notebook bar draws through IPython instead)."""

    def write(self, text: str) -> int:
        return len(text)


class NotebookBar(tqdm):
    """A bar drawn as one ``text/plain`` output of the cell, updated in place; its last state stays
    (``leave``)."""

    def __init__(self, *args, **kwargs):
        self._handle = None
        kwargs.update(file=_Nowhere(), leave=True)
        kwargs.setdefault("ascii", False)
        kwargs.setdefault("mininterval", 0.5)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        from IPython.display import display

        text = {"text/plain": self.__str__() if msg is None else msg}
        if self._handle is None:
            self._handle = display(text, raw=True, display_id=True)
        else:
            self._handle.update(text, raw=True)
        return True


class LogBar(tqdm):
    """A bar for logs: a line at most every ``LOG_EVERY_S`` seconds while it runs, and one when it
    closes."""

    def __init__(self, *args, **kwargs):
        self._last_line = time.monotonic()
        kwargs.update(leave=False, ascii=True)
        kwargs.setdefault("mininterval", LOG_EVERY_S)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # tqdm's close() clears a bar with an empty message: write its final state instead
        closing = msg == ""
        if closing or (self.n and time.monotonic() - self._last_line >= LOG_EVERY_S):
            self.fp.write(self.__str__() + "\n")
            self.fp.flush()
            self._last_line = time.monotonic()
        return False


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar (same arguments) drawn the way ``where()`` says suits this process's output."""
    cls = {"terminal": tqdm, "notebook": NotebookBar, "log": LogBar}[where()]
    return cls(iterable, **kwargs)
