#!/usr/bin/env bash
# The dose-response study of docs/STUDY.md in the background, resumable: every finished run is one JSON under
# docs/results/dose/<level>/records/ and a rerun skips what is recorded. Runs from a snapshot of craftlib/.
#   bash benchmarks/dose.sh                        # start or continue (seed-major); progress in runs/dose.log
#   SEEDS=1 ARMS=none bash benchmarks/dose.sh      # the pilot: standard training at seed 0 of every level
source "$(dirname "$0")/snapshot.sh" dose
# shellcheck disable=SC2086
nice -n "${NICE:-10}" $PY -m craftlib.study.dose_cli --seeds "${SEEDS:-10}" --first-seed "${FIRST_SEED:-0}" \
    --arms ${ARMS:-none contextual random_matched} ${LEVELS:+--levels $LEVELS} --jobs "${JOBS:-2}" \
    --models runs/dose-models >> runs/dose.log 2>&1
echo "DOSE DONE" >> runs/dose.log
