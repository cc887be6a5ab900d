# Two commands on a fresh machine: `make demo` (the workshop pipeline) and `make test` (the suite).
# Every target runs `python -m craftlib ...`, which works the same without make (Windows): see README.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
DEV_STAMP = $(VENV)/.installed-dev-stamp
TORCH  ?= auto
PYTEST_ARGS ?=

.PHONY: install install-dev demo lint test test-ipywidgets7 check lab kit html screenshots bench study study-report dose dose-status dose-report companion federated-study constraints clean

## learners: craftlib + JupyterLab from pyproject's ranges (no test packages); TORCH=cpu|pypi|auto (auto: CPU-only
## torch on Linux without an NVIDIA GPU, about 190 MB instead of 3 GB)
$(STAMP): pyproject.toml
	$(PYTHON) -m craftlib setup --venv $(VENV) --torch $(TORCH)
	touch $(STAMP)

install: $(STAMP)

## CI and developers: the test packages too, at constraints.txt's exact versions
$(DEV_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m craftlib setup --venv $(VENV) --dev
	touch $(STAMP) $(DEV_STAMP)

install-dev: $(DEV_STAMP)

## the main job: LFW -> baseline + standard / random / CRAFT at one seed -> table, figures, runs/demo/summary.json
demo: install
	$(PY) -m craftlib demo --out runs/demo

## ruff over the whole tree: lint, then the format check (pyproject's [tool.ruff]; CI runs it before the tests)
lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## the whole test suite (CRAFTLIB_DATA must point at LFW when offline), then the widget tests under ipywidgets 7
test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) test-ipywidgets7

## the widget tests again under ipywidgets 7 (what Colab ships): a small venv holding only ipywidgets 7 and its
## frontend packages, everything else read from $(VENV) through a .pth file (seconds to build)
IPYW7 = .venv-ipywidgets7
test-ipywidgets7: install-dev
	$(PY) -m craftlib.workshop.install --ipywidgets7 $(IPYW7) --base $(VENV)
	$(IPYW7)/bin/python -m pytest -p no:cacheprovider tests/test_widgets.py tests/test_check.py -k "widget or ipywidgets"

## is this machine ready? one OK / FAIL line per item (python, packages, torch, LFW and its variant, stem, widgets, speed)
check: install
	$(PY) -m craftlib check

## JupyterLab on a working copy of notebooks/ in workspace/ (git-ignored): the tracked notebooks stay clean
lab: install
	$(PY) -m craftlib lab $(if $(SEED),--seed $(SEED),)

## a room kit for an offline workshop (instructors; online, about an hour with the full-mode notebooks)
kit: install
	$(PY) -m craftlib kit --out room-kit

## execute every notebook (FAST unless CRAFT_FAST=0) and render HTML under build/
html: install
	CRAFT_FAST=$${CRAFT_FAST:-1} $(PY) -m craftlib.workshop.notebooks --html build/html

## regenerate the README's widget screenshots from the real-browser tests
screenshots: install
	CRAFTLIB_SCREENSHOTS=docs/img $(PY) -m pytest -m browser tests/test_browser.py

## speed benchmarks -> benchmarks/results.json and the tables in docs/PERFORMANCE.md
bench: install
	$(PY) benchmarks/run.py

## the study behind docs/RESULTS.md: 30 paired seeds x 3 arms (workshop recipe) + 10 seeds with decay budget left
## (workshop-early). Resumable: each finished run is one JSON under docs/results/*/records; rerun to continue.
STUDY_SEEDS ?= 30
EARLY_SEEDS ?= 10
JOBS ?= 2
study: install
	STUDY_SEEDS=$(STUDY_SEEDS) EARLY_SEEDS=$(EARLY_SEEDS) JOBS=$(JOBS) bash benchmarks/study.sh
	$(MAKE) study-report

## summaries and figures of the study from its committed records (seconds; no training)
study-report: install
	$(PY) -m craftlib report docs/results/study --curves --write docs/results/compare_summary.json \
	  --metrics accuracy silent_fraction weight_fraction --figures docs/results
	$(PY) -m craftlib report docs/results/study-early --curves --write docs/results/early_summary.json \
	  --metrics accuracy silent_fraction --figures docs/results/early
	$(PY) -m craftlib.study.hazard docs/results/study docs/results/study-early --write docs/results/survival_stratified.json

## the dose-response study (docs/STUDY.md): the workshop recipe at 5 weight decays (40 px) and 2 at 64 px, 10 paired
## seeds x 3 arms, seed-major (40 px first). Resumable: one JSON per run under docs/results/dose/<level>/records,
## a checkpoint per epoch under runs/dose-models; rerun to continue. The other arms start from standard training's checkpoint until their detector first fires.
dose: install
	bash benchmarks/dose.sh
	$(MAKE) dose-report

dose-status: install
	$(PY) -m craftlib.study.dose_cli --status --models runs/dose-models

dose-report: install
	$(PY) -m craftlib.study.dose_cli --report --results docs/RESULTS.md

## the companion study (notebook 06): standard / CRAFT / CReLU stem / Top-K, 5 paired seeds of the workshop recipe,
## with pairing, shape-bias, params and MACs. Resumable: one JSON per run under docs/results/companion_sparsity/records.
COMPANION_SEEDS ?= 5
COMPANION_JOBS ?= 1
companion: install
	$(PY) -m craftlib.companions.sparsity.cli --seeds $(COMPANION_SEEDS) --jobs $(COMPANION_JOBS) \
	  --out docs/results/companion_sparsity --models runs/companion-models

## the federated study (notebook 08): 17 arms x 3 seeds at the small budget, then the larger budget in two
## background workers, then its declared extension (seeds 3-9 of four arms); then the larger budget's tables and
## death figure. Resumable: one JSON per run under docs/results/companion_federated*/records.
federated-study: install
	OMP_NUM_THREADS=1 $(PY) -m craftlib.companions.federated.cli --out docs/results/companion_federated --seeds 3
	bash benchmarks/federated_full.sh
	FIRST_SEED=3 SEEDS=7 ARMS="central-all-none central_steps-all-none fedavg-iid-none local-iid-none" bash benchmarks/federated_full.sh
	$(PY) -m craftlib.companions.federated.cli --out docs/results/companion_federated_full --report

constraints: install
	$(PY) -m pip freeze --exclude-editable | sed '/^craftlib/d' > constraints.new && \
	  { echo '# Exact versions CI installs (pip install -c constraints.txt). pyproject.toml keeps compatible ranges.'; \
	    echo '# Regenerate: make constraints'; cat constraints.new; } > constraints.txt && rm constraints.new

clean:
	rm -rf build runs .pytest_cache
