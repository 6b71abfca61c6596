# `make demo` and `make test` each build .venv on first use, so a fresh machine needs only
# python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-guarantees lint test test-vm vm-setup clean-vm bench clean

PLUGINS := plugins/serial plugins/can plugins/gpio plugins/exchange

$(STAMP): pyproject.toml $(foreach p,$(PLUGINS),$(p)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m hil.demo

demo-guarantees: $(STAMP)
	$(BIN)/python -m clove.demo

# The lint stage: style (ruff), types (mypy --strict), and the floors of docs/architecture.md
# (import-linter contracts in pyproject.toml). `make test` runs it first.
LINTED := clove clove_sdk hil plugins tests bench examples
TYPED := clove clove_sdk hil plugins/serial/clove_driver_serial plugins/can/clove_driver_can plugins/gpio/clove_driver_gpio plugins/exchange/clove_driver_exchange

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/python -m mypy $(TYPED)
	$(BIN)/lint-imports

test: lint vm-setup
	$(BIN)/python -m pytest -q

# The test guest (docs/testing.md): qemu, busybox-static, can-utils, gpiod tools by package name,
# a Debian kernel fetched into a cache outside the checkout ($$CLOVE_VM_CACHE, else
# ~/.cache/clove-vm), an initramfs and the gpio-sim module built there. Reused on later runs;
# where it cannot be set up, the reason is recorded and the guest tier skips with it.
vm-setup: $(STAMP)
	$(BIN)/python -m hil.vm setup

# The whole guest tier, the long rover-on-a-Linux-board selection included.
test-vm: vm-setup
	CLOVE_VM_FULL=1 $(BIN)/python -m pytest -q tests/vm

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean-vm:
	rm -rf "$${CLOVE_VM_CACHE:-$$HOME/.cache/clove-vm}"

clean:
	rm -rf $(VENV) build *.egg-info
