# The two commands of the README. Each creates .venv and installs the project when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint data clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Main job: reproduce the papers' complexity tables (printed, and written to docs/tables.md).
demo: $(STAMP)
	$(VENV)/bin/zoo reproduce

## Tests (the whole suite; CI runs exactly this).
test: $(STAMP) data
	$(VENV)/bin/python -m pytest -q

## Fashion-MNIST from Debian, for the tests and examples that use real images.
data:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null; \
	    else echo "note: Fashion-MNIST missing; run 'sudo apt-get install dataset-fashion-mnist' (tests that need it will skip)"; fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check zoo tests scripts

clean:
	rm -rf $(VENV) build *.egg-info
