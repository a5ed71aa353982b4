# The two commands of the README. Each creates .venv and installs the project when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint data clean lce

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

## Optional: Larq Compute Engine in its own virtualenv (numpy < 2, TensorFlow 2.16), for the
## LCE rows of the binary layer benchmark (zoo/deploy/binary_engines.py runs it in a subprocess).
## larq 0.14 needs Keras 2 (TF_USE_LEGACY_KERAS=1, tf_keras); tf_keras declares the full
## tensorflow package, whose modules tensorflow-cpu already provides, hence --no-deps.
LCE_VENV := .venv-lce
lce: $(LCE_VENV)/.installed

$(LCE_VENV)/.installed:
	test -x $(LCE_VENV)/bin/python || $(PYTHON) -m venv $(LCE_VENV)
	$(LCE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LCE_VENV)/bin/python -m pip install --quiet 'larq-compute-engine==0.16.*' 'larq==0.14.*' \
	  'tensorflow-cpu==2.16.*' 'numpy<2'
	$(LCE_VENV)/bin/python -m pip install --quiet --no-deps 'tf_keras==2.16.*'
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check zoo tests scripts

clean:
	rm -rf $(VENV) build *.egg-info
