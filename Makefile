# Two commands do all set-up: `make demo` and `make test`. Both install what they need first
# and are quick no-ops once installed (stamp files under .venv/).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := libopencv-dev libturbojpeg0-dev pkg-config g++ dataset-fashion-mnist
# torch/torchvision pins verified on this kind of machine (ENVIRONMENT.md); a GPU cluster may
# override them: `make setup TORCH_PINS="torch==X torchvision==Y"`.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: setup test demo clean-venv
setup: $(VENV)/.installed

$(VENV)/.apt-done:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml $(VENV)/.apt-done $(VENV)/bin/python
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[dev]'
	@touch $@

test: setup
	bash tools/run_tests.sh $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/eigenmap demo

clean-venv:
	rm -rf $(VENV)
