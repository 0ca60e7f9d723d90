# L-Verse kit. `make reproduce` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= smoke
ONLY ?=

.PHONY: setup reproduce claims test bench lab notebooks clean-reports

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lverse kit)" >/dev/null
	touch $@

setup: $(VENV)/.installed

reproduce: setup
	$(PY) -m lverse_core run --profile $(PROFILE) $(if $(ONLY),--only $(ONLY),)

claims: setup
	$(PY) -m lverse_core run --profile $(PROFILE) --only 07

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m pip install -q -r bench/requirements.txt  # the peers measured beside the kit
	$(PY) -m bench

notebooks: setup  # rewrite notebooks/*.ipynb from their sources notebooks/*.py
	$(PY) -m lverse_core notebooks

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-reports:
	rm -rf reports/$(PROFILE)
