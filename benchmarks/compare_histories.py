"""Are two runs bit-identical? Compare the ``history.json`` files that ``python -m craftlib train``
writes.

    .venv/bin/python benchmarks/compare_histories.py RUN_A/history.json RUN_B/history.json

Every field present in both histories is compared exactly (floats as written, no tolerance), except
wall-clock ``seconds``; fields only one side has are listed (a newer version may record more). Exit
status 0 when everything shared is identical, 1 otherwise. Used to prove that a refactor changed no
number (docs/ARCHITECTURE.md) and that a seed repeats on the same machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IGNORED = {"seconds"}


def differences(a, b, path: str = "") -> tuple[list[str], list[str]]:
    """(paths whose values differ, paths present on one side only), walking dicts and lists."""
    if isinstance(a, dict) and isinstance(b, dict):
        diff, extra = [], [f"{path}.{k}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b) - IGNORED):
            d, e = differences(a[k], b[k], f"{path}.{k}")
            diff += d
            extra += e
        return diff, extra
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path} (length {len(a)} vs {len(b)})"], []
        diff, extra = [], []
        for i, (x, y) in enumerate(zip(a, b)):
            d, e = differences(x, y, f"{path}[{i}]")
            diff += d
            extra += e
        return diff, extra
    same = a == b or (a != a and b != b)  # NaN (the initial loss) equals NaN here
    return ([] if same else [f"{path}: {a!r} != {b!r}"]), []


def main(argv: list[str]) -> int:
    a, b = (json.loads(Path(p).read_text()) for p in argv[:2])
    diff, extra = differences(a["history"], b["history"], "history")
    event_diff, event_extra = differences(a.get("events", []), b.get("events", []), "events")
    print(
        f"{len(a['history'])} history entries and {len(a.get('events', []))} events compared; "
        f"{len(diff) + len(event_diff)} differing values"
    )
    for line in (diff + event_diff)[:20]:
        print("  DIFF", line)
    only = sorted({e.split("[")[0] + "." + e.rsplit(".", 1)[-1] for e in extra + event_extra})
    if only:
        print("  fields recorded by one side only (not compared):", ", ".join(only))
    return 0 if not diff and not event_diff else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
