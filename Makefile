# L-Verse kit. `make reproduce` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= smoke
ONLY ?=
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu: take torch and torchvision (the versions pyproject.toml
# pins) from that index first. On Linux, PyPI's torch is the CUDA build (several GB); the CPU build is ~200 MB
TORCH_INDEX ?=
TORCH_PINS := $(shell grep -oE '"torch(vision)?==[0-9.]+"' pyproject.toml | tr -d '"')

.PHONY: setup reproduce results claims paper-dry test bench lab notebooks clean-reports

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(if $(TORCH_INDEX),$(PY) -m pip install -q $(TORCH_PINS) --index-url $(TORCH_INDEX),)
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lverse kit)" >/dev/null
	touch $@

setup: $(VENV)/.installed

reproduce: setup
	$(PY) -m lverse_core run --profile $(PROFILE) $(if $(ONLY),--only $(ONLY),)

# reports/$(PROFILE)/RESULTS.md from the latest run (a run writes it too); README=1 also refreshes README.md's block
# between <!-- results:$(PROFILE) begin --> and <!-- results:$(PROFILE) end -->, CLAIMS_DOC=1 docs/claims.md's
# between <!-- claims:$(PROFILE) begin --> and <!-- claims:$(PROFILE) end --> from the latest `make claims`
results: setup
	$(PY) -m lverse_core results --profile $(PROFILE) $(if $(README),--readme,) $(if $(CLAIMS_DOC),--claims-doc,)

# the claims scorecard (notebook 07); CLAIMS="1 3" runs the arms of those claims only, PRIMARIES_ONLY=1 only the arms
# their primary measures compare, SEEDS="0 1 2 3 4" these seeds instead of the profile's claims.seeds
claims: setup
	$(PY) -m lverse_core run --profile $(PROFILE) --only 07 $(if $(CLAIMS),-p CLAIMS "$(CLAIMS)",) $(if $(PRIMARIES_ONLY),-p PRIMARIES_ONLY true,) $(if $(SEEDS),-p SEEDS "$(SEEDS)",)

# The paper path end to end on the CPU (configs/paper-dry.yaml: the paper's sizes, stand-in assets, 1-2 steps per
# stage); the notebook parameters keep its figures to a few samples, since every paper-size image is 1024 tokens
paper-dry: setup
	$(PY) -m lverse_core run --profile paper-dry -p N_SAMPLES 4 -p N_SHOW 2 -p N_USAGE 4 -p N_EXAMPLES 1 \
	  -p IMAGES_PER_CAPTION 1 -p N_FIGURE 2 -p N_GRID 1 -p GRID_IMAGES 1

# make test runs every test; make test KIND=unit (or notebooks, browser, slow) runs one kind (tests/conftest.py)
test: setup
	$(PY) -m pytest -q $(if $(KIND),-m $(KIND),)

bench: setup
	$(PY) -m pip install -q -r bench/requirements.txt  # the peers measured beside the kit
	$(PY) -m bench

notebooks: setup  # rewrite notebooks/*.ipynb from their sources notebooks/*.py
	$(PY) -m lverse_core notebooks

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-reports:
	rm -rf reports/$(PROFILE)
