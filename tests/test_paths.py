"""Where craftlib puts files, the FAST switch, and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from craftlib import paths


def test_cache_and_runs_dirs_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_CACHE, str(tmp_path / "c"))
    monkeypatch.setenv(paths.ENV_RUNS, str(tmp_path / "r"))
    assert paths.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert paths.runs_dir() == tmp_path / "r" and (tmp_path / "r").is_dir()
    monkeypatch.delenv(paths.ENV_RUNS)
    assert paths.runs_dir() == paths.REPO_ROOT / "runs"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1", True),
        ("true", True),
        (" Yes ", True),
        ("on", True),
        ("0", False),
        ("no", False),
        ("", False),
        ("off", False),
    ],
)
def test_fast_mode(monkeypatch, value, expected):
    monkeypatch.setenv(paths.ENV_FAST, value)
    assert paths.fast_mode() is expected
    assert paths.fast_mode(default=True) is expected  # a set variable wins over the default


def test_fast_mode_default_when_unset(monkeypatch):
    monkeypatch.delenv(paths.ENV_FAST, raising=False)
    assert paths.fast_mode() is False and paths.fast_mode(default=True) is True


def test_atomic_write_uses_normal_permissions(tmp_path):
    path = paths.atomic_write(tmp_path / "x.txt", lambda tmp: tmp.write_text("hi"))
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_text() == "hi"
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = paths.atomic_write(tmp_path / "sub" / "x.txt", lambda tmp: tmp.write_text("old"))

    def crash(tmp: Path):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        paths.atomic_write(path, crash)
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["x.txt"]  # no temporary file left behind


def test_write_json_is_atomic_and_indented(tmp_path):
    path = paths.write_json(tmp_path / "out" / "m.json", {"accuracy": 0.8, "arms": ["none"]})
    assert path.read_text() == '{\n "accuracy": 0.8,\n "arms": [\n  "none"\n ]\n}'
