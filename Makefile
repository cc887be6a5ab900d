# Two commands on a fresh machine: `make demo` (the workshop pipeline) and `make test` (the suite).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lab html screenshots bench compare constraints clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[lab,test]'
	touch $(STAMP)

install: $(STAMP)

## the main job: LFW -> baseline + standard / random / CRAFT at one seed -> table, figures, runs/demo/summary.json
demo: install
	$(PY) -m craftlib demo --out runs/demo

## the whole test suite (CRAFTLIB_DATA must point at LFW when offline)
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

## JupyterLab on the workshop notebooks
lab: install
	$(VENV)/bin/jupyter lab notebooks/

## execute every notebook (FAST unless CRAFT_FAST=0) and render HTML under build/
html: install
	CRAFT_FAST=$${CRAFT_FAST:-1} $(PY) -m craftlib.notebooks --html build/html

## regenerate the README's widget screenshots from the real-browser tests
screenshots: install
	CRAFTLIB_SCREENSHOTS=docs/img $(PY) -m pytest -m browser tests/test_browser.py

## speed benchmarks -> benchmarks/results.json and the tables in docs/PERFORMANCE.md
bench: install
	$(PY) benchmarks/run.py

## the 5-seed three-way comparison behind docs/RESULTS.md (about 35 min on an idle 2-core machine)
compare: install
	$(PY) -m craftlib compare --seeds 5 --jobs 3 --out runs/compare --figures
	cp runs/compare/summary.json docs/results/compare_summary.json

constraints: install
	$(PY) -m pip freeze --exclude-editable | sed '/^craftlib/d' > constraints.new && \
	  { echo '# Exact versions CI installs (pip install -c constraints.txt). pyproject.toml keeps compatible ranges.'; \
	    echo '# Regenerate: make constraints'; cat constraints.new; } > constraints.txt && rm constraints.new

clean:
	rm -rf build runs .pytest_cache
