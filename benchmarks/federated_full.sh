#!/usr/bin/env bash
# The federated study's larger budget (docs/RESULTS.md, "The larger budget") in the background, resumable:
# two workers of one thread each split the arms (alternately), each seed-major; every finished run is one JSON
# under docs/results/companion_federated_full/records/ and a rerun skips what is recorded.
# Runs from a snapshot of craftlib/ so that editing the working tree cannot change a study under way.
#   bash benchmarks/federated_full.sh        # start or continue; progress in runs/federated_full.*.log
#   FIRST_SEED=3 SEEDS=7 ARMS="central-all-none central_steps-all-none fedavg-iid-none local-iid-none" \
#     bash benchmarks/federated_full.sh      # the declared extension: seeds 3-9 of the four arms of question (1)
# A run given ARMS takes its own snapshot and logs (runs/federated_full-arms.*.log), so it can run beside the full one.
TAG=${ARMS:+-arms}
source "$(dirname "$0")/snapshot.sh" "federated$TAG"
OUT=docs/results/companion_federated_full
mapfile -t halves < <($PY -c "import craftlib.companions.federated.study as S; n = '${ARMS:-}'.split() or list(S.arm_names()); print(' '.join(n[0::2])); print(' '.join(n[1::2]))")
for i in 0 1; do
  # shellcheck disable=SC2086
  nice -n "${NICE:-10}" $PY -m craftlib.companions.federated.cli --out "$OUT" --identities 1202 --rounds 10 --seeds "${SEEDS:-3}" \
      --first-seed "${FIRST_SEED:-0}" --arms ${halves[$i]} >> "runs/federated_full$TAG.$i.log" 2>&1 &
done
wait
echo "FEDERATED FULL DONE" >> "runs/federated_full$TAG.0.log"
