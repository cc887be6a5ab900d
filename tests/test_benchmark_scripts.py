"""The background-study scripts: they must run the code snapshot they take, not the working tree being edited."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH needs Python 3.11")
def test_snapshot_sh_makes_python_import_the_snapshot(tmp_path):
    name = f"pytest-{tmp_path.name}"
    script = f'source benchmarks/snapshot.sh {name}; $PY -c "import craftlib; print(craftlib.__file__)"'
    try:
        out = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                             timeout=120, check=True).stdout.strip()
        assert Path(out) == REPO / "runs" / f"{name}-code" / "craftlib" / "__init__.py", out
    finally:
        shutil.rmtree(REPO / "runs" / f"{name}-code", ignore_errors=True)


@pytest.mark.parametrize("script", ["study.sh", "federated_full.sh"])
def test_study_scripts_parse_and_use_the_snapshot(script):
    text = (REPO / "benchmarks" / script).read_text()
    assert "source \"$(dirname \"$0\")/snapshot.sh\"" in text
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], check=True)
