# Guard — set-up and the two main jobs. Works on a fresh Debian machine with Python 3.11.
PY      ?= python3
VENV    := .venv
STAMP   := $(VENV)/.installed
# A second env for the cross-check against pytorch-ood (it needs torchvision, which cannot sit
# beside the pinned torch CPU build): tests/guard/detectors/test_vs_pytorch_ood.py runs it as a subprocess.
XVENV   := .venv-xcheck
XREQS   := tests/xcheck-requirements.txt
XSTAMP  := $(XVENV)/.installed
# Debian packages: the real Fashion-MNIST data set (nothing is downloaded at run time) and the real
# components the tests run. Installed only when one is missing (apt-get update first, once).
APT_PACKAGES := dataset-fashion-mnist

.PHONY: setup apt xcheck demo lint test report clean

setup: apt $(STAMP)

xcheck: $(XSTAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(XSTAMP): $(XREQS)
	test -d $(XVENV) || $(PY) -m venv $(XVENV)
	$(XVENV)/bin/pip install --quiet --upgrade pip
	$(XVENV)/bin/pip install --quiet -r $(XREQS)
	touch $(XSTAMP)

# Fit the default guard on Fashion-MNIST (first run only) and score test images.
demo: setup
	$(VENV)/bin/guard demo

# The default model's report (reports/fmnist_resnet): fits the default artifact first if missing.
ARTIFACT := artifacts/fmnist_resnet
$(ARTIFACT)/manifest.json: | setup
	$(VENV)/bin/python -c "from pathlib import Path; from guard.defaults import default_guard; default_guard(Path('$(ARTIFACT)'))"

report: setup $(ARTIFACT)/manifest.json
	$(VENV)/bin/guard report --artifact $(ARTIFACT) --out reports/fmnist_resnet --n-test 10000 \
		--include reports/ood/eval_ood.md --include reports/adversarial/adversarial.md

# Lint, format check and type check (rules in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Lint, then the whole test suite.
test: lint $(XSTAMP)
	GUARD_TEST_STRICT=1 $(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) $(XVENV) artifacts .pytest_cache
