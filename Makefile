# The two entry points a new user needs: `make demo` and `make test`.
# Both create .venv on first use and install progsynth into it (torch from the local CPU wheel).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

# setup.py and the C kernels are prerequisites so that a change to any of them rebuilds the extensions.
$(STAMP): pyproject.toml setup.py src/progsynth/core/_packed.c src/progsynth/models/_rowsum.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/progsynth demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

# devinterp 1.3.2 is a benchmark-only dependency (benchmarks/llc.py compares against it). --no-deps
# keeps pip from touching torch; tqdm and cloudpickle are the packages it imports beyond ours.
bench: $(STAMP)
	$(BIN)/pip install -q --no-deps devinterp==1.3.2 'tqdm>=4.65,<5' 'cloudpickle>=3.0,<4'
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build src/*.egg-info src/progsynth/core/_packed*.so src/progsynth/models/_rowsum*.so
