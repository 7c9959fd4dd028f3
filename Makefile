# Guard — set-up and the two main jobs. Works on a fresh Debian machine with Python 3.11.
PY      ?= python3
VENV    := .venv
STAMP   := $(VENV)/.installed
# A second env for the cross-check against pytorch-ood (it needs torchvision, which cannot sit
# beside the pinned torch CPU build): tests/guard/detectors/test_vs_pytorch_ood.py runs it as a subprocess.
XVENV   := .venv-xcheck
XREQS   := tests/xcheck-requirements.txt
XSTAMP  := $(XVENV)/.installed
# A third env for a real Triton Inference Server (PyTriton's tritonserver + onnxruntime), which the
# upstream-mode tests (tests/server/upstream) and `guard demo --upstream` put behind the proxy.
# Made from Debian's interpreter: the Python backend's stub links the system libpython 3.11.
TVENV   := .venv-triton
TREQS   := tests/triton-requirements.txt
TSTAMP  := $(TVENV)/.installed
# Debian packages: the real Fashion-MNIST data set (nothing is downloaded at run time) and the real
# components the tests run. Installed only when one is missing (apt-get update first, once).
APT_PACKAGES := dataset-fashion-mnist
# deploy/ (tests/deploy): the container image is built and run with podman (runc; a base made with
# debootstrap), the alerting rules are checked by promtool and a real Prometheus server.
APT_PACKAGES += podman runc debootstrap prometheus
# the Triton env (.venv-triton) is made from Debian's own interpreter
APT_PACKAGES += python3 python3-venv
# the compiled geometry core (setup.py, guard/geometry/native/) is built by pip with a C++ compiler
APT_PACKAGES += g++ python3-dev

.PHONY: setup apt xcheck triton demo lint test report clean

setup: apt $(STAMP)

xcheck: $(XSTAMP)

triton: apt $(TSTAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi

# (the C++ sources too: pip install -e rebuilds the compiled geometry core when they change)
$(STAMP): pyproject.toml setup.py $(wildcard guard/geometry/native/*)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	# guard explain's ONNX -> torch converter, without its torchvision (see pyproject.toml)
	$(VENV)/bin/pip install --quiet --no-deps onnx2torch==1.5.15
	touch $(STAMP)

$(XSTAMP): $(XREQS)
	test -d $(XVENV) || $(PY) -m venv $(XVENV)
	$(XVENV)/bin/pip install --quiet --upgrade pip
	$(XVENV)/bin/pip install --quiet -r $(XREQS)
	touch $(XSTAMP)

$(TSTAMP): $(TREQS)
	test -d $(TVENV) || /usr/bin/python3 -m venv $(TVENV)
	$(TVENV)/bin/pip install --quiet --upgrade pip
	$(TVENV)/bin/pip install --quiet -r $(TREQS)
	touch $(TSTAMP)

# Fit the default guard on Fashion-MNIST (first run only) and score test images.
demo: setup
	$(VENV)/bin/guard demo

# The default model's report (reports/fmnist_resnet): fits the default artifact first if missing.
ARTIFACT := artifacts/fmnist_resnet
$(ARTIFACT)/manifest.json: | setup
	$(VENV)/bin/python -c "from pathlib import Path; from guard.defaults import default_guard; default_guard(Path('$(ARTIFACT)'))"

report: setup $(ARTIFACT)/manifest.json
	$(VENV)/bin/guard report --artifact $(ARTIFACT) --out reports/fmnist_resnet --n-test 10000 \
		--include reports/ood/eval_ood.md --include reports/adversarial/adversarial.md \
		--include reports/pixel_space/pixel_space.md

# Lint, format check and type check (rules in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Lint, then the whole test suite.
test: lint $(XSTAMP) triton
	GUARD_TEST_STRICT=1 $(VENV)/bin/python -m pytest -q
	# the container image: built (minutes, cached in podman's store) and run (tests/deploy/test_image.py)
	GUARD_TEST_STRICT=1 $(VENV)/bin/python -m pytest -q -m slow tests/deploy/test_image.py

clean:
	rm -rf $(VENV) $(XVENV) $(TVENV) artifacts .pytest_cache
