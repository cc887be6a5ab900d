#!/usr/bin/env bash
# The seed study of docs/STUDY.md in the background, resumable: every finished run is one JSON record under
# docs/results/study*/records/, and a rerun skips what is recorded. Runs from a snapshot of craftlib/ so that
# editing the working tree cannot change a study that is under way.
#   bash benchmarks/study.sh            # start or continue; progress in runs/study.log
source "$(dirname "$0")/snapshot.sh" study
{
  $PY -m craftlib compare --recipe workshop --seeds "${STUDY_SEEDS:-30}" --jobs "${JOBS:-2}" --quiet \
      --out docs/results/study --models runs/study-models
  $PY -m craftlib compare --recipe workshop-early --seeds "${EARLY_SEEDS:-10}" --jobs "${JOBS:-2}" --quiet \
      --out docs/results/study-early
  echo "STUDY DONE"
} >> runs/study.log 2>&1
