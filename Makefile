# Two commands do all the set-up on a fresh machine:
#   make test   - install everything into .venv and run the whole test suite
#   make demo   - install everything, start two sandbox clusters and Airflow (http://localhost:8080)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install system-packages test demo sandbox bench fault-matrix clean

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

# Chromium for the browser tests (apt-get; root or sudo).
system-packages:
	./scripts/system-packages.sh

test: $(STAMP) system-packages
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	./scripts/demo.sh

sandbox: $(STAMP)
	$(PY) -m sandbox up --dir .sandbox

bench: $(STAMP)
	$(PY) benchmarks/sandbox_scale.py

# Every DAG under every injected fault at several rates, judged from the cluster and AWS state;
# fails on an unsafe cell or a timeout (README: Fault matrix). `make test` runs a reduced one.
fault-matrix: $(STAMP)
	$(PY) benchmarks/fault_matrix.py

clean:
	rm -rf $(VENV) .airflow .sandbox .pytest_cache
