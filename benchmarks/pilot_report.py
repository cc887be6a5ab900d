"""The pilot that chose CRAFT's ``downstream`` and ``strong_quantile`` defaults (docs/STUDY.md), as
a table.

    .venv/bin/python benchmarks/pilot_report.py docs/results/pilot

For every configuration folder (``ds-<downstream>-q<quantile>``): how many filters were renewed, the
share of them not silent at the end (the criterion), their median norm relative to the pure-decay
curve at the end (> 1: held up by the task), the silent fraction at the end and DevTest accuracy.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from craftlib.study.experiments import load_records  # noqa: E402
from craftlib.study.results import SILENT_TAU, run_values  # noqa: E402
from craftlib.study.survival import survival  # noqa: E402
from craftlib.training import TrainConfig  # noqa: E402


def rows(folder: Path) -> list[str]:
    out = []
    for sub in sorted(p for p in folder.iterdir() if (p / "records").is_dir()):
        for arm in ("none", "contextual"):
            records = [r for r in load_records(sub) if r["arm"] == arm]
            if not records:
                continue
            config = TrainConfig.from_dict(records[0]["fingerprint"]["recipe"]["train"])
            renewed = [row for r in records for row in survival(r, config, SILENT_TAU)]
            alive = np.mean([row["alive"][-1] for row in renewed]) if renewed else float("nan")
            ratio = np.median([row["ratio"][-1] for row in renewed]) if renewed else float("nan")
            silent = np.mean([run_values(r)["silent_fraction"] for r in records])
            accuracy = np.mean([r["accuracy"] for r in records])
            out.append(
                f"| {sub.name} | {arm} | {len(records)} | {len(renewed)} | {alive:.0%} | "
                f"{ratio:.2f} "
                f"| {silent:.1%} | {accuracy:.2%} |"
            )
    return out


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else REPO / "docs" / "results" / "pilot")
    print(
        "| configuration | arm | seeds | renewed filters | not silent at the end | norm / pure "
        "decay (median) "
        "| silent at the end | DevTest accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
