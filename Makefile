# Two commands do all set-up: `make demo` and `make test`. Both install what they need first
# and are quick no-ops once installed (stamp files under .venv/).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := libopencv-dev libturbojpeg0-dev pkg-config g++ dataset-fashion-mnist
# torch/torchvision pins verified on this kind of machine (docs/install.md); a GPU cluster may
# override them: `make setup TORCH_PINS="torch==X torchvision==Y"`.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# pip's own output goes to PIP_LOG; the console gets one line per step, and the end of that log
# when pip fails (a failed build's error is there)
PIP_LOG := $(VENV)/pip-setup.log
PIP_INSTALL = $(PIP) install --disable-pip-version-check --progress-bar off
PIP_QUIET = >> $(PIP_LOG) 2>&1 || { tail -n 40 $(PIP_LOG) >&2; \
	echo "setup: pip failed (above: the end of its output; all of it: $(PIP_LOG))" >&2; exit 1; }

.PHONY: setup test test-fast demo clean-venv
setup: $(VENV)/.installed

$(VENV)/.apt-done:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/bin/python:
	@echo "setup: creating the virtual environment $(VENV)"
	@python3 -m venv $(VENV)
	@$(PIP_INSTALL) --upgrade pip setuptools wheel $(PIP_QUIET)

$(VENV)/.installed: pyproject.toml $(VENV)/.apt-done $(VENV)/bin/python
	@echo "setup: installing $(TORCH_PINS) (several GB on a first install: minutes; pip's progress: tail -f $(PIP_LOG))"
	@$(PIP_INSTALL) $(TORCH_PINS) $(PIP_QUIET)
	@echo "setup: installing neural-eigenmaps and its dependencies (FFCV and DeepSpeed build from source)"
	@$(PIP_INSTALL) -e '.[dev]' $(PIP_QUIET)
	@touch $@
	@echo "setup: done ($(VENV)/bin/eigenmap)"

test: setup
	bash tools/run_tests.sh $(PYTEST_ARGS)

# the unit lane: every test not marked slow or multiprocess (no Ray, no DeepSpeed group, no
# training run); `make test` still runs everything
test-fast: setup
	bash tools/run_tests.sh -m "not slow and not multiprocess" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/eigenmap demo

clean-venv:
	rm -rf $(VENV)
