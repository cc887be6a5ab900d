# Sourced by the background studies: run Python from a snapshot of craftlib/ (runs/<name>-code) so that editing
# the working tree cannot change a study under way, one thread per process. Sets PY.
#   source benchmarks/snapshot.sh study
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
snapshot="runs/$1-code"
rm -rf "$snapshot" && mkdir -p "$snapshot" && cp -r craftlib "$snapshot/"
# PYTHONSAFEPATH (Python >= 3.11): `python -m` would otherwise put the working tree first on sys.path.
export PYTHONPATH="$PWD/$snapshot" PYTHONSAFEPATH=1 OMP_NUM_THREADS=1
PY=.venv/bin/python
