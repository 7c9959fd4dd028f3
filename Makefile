# Guard — set-up and the two main jobs. Works on a fresh Debian machine with Python 3.11.
PY      ?= python3
VENV    := .venv
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup demo test test-fast clean

setup: $(STAMP) $(FMNIST)

# Debian's dataset-fashion-mnist package holds the real data set (nothing is downloaded at run time).
$(FMNIST):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[torch,test]'
	touch $(STAMP)

# Fit the default guard on Fashion-MNIST (first run only) and score test images.
demo: setup
	$(VENV)/bin/guard demo

# The whole test suite.
test: setup
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) artifacts .pytest_cache
