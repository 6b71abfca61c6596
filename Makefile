# `make demo` and `make test` each build .venv on first use, so a fresh machine needs only
# python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-guarantees lint test bytecode test-vm vm-setup fleet-setup ops-setup console-setup image clean-vm bench clean

PLUGINS := plugins/serial plugins/can plugins/gpio plugins/exchange

# clove_sdk is its own distribution (clove-sdk), which clove depends on: installed editable
# from its directory so the pip resolver takes it from the checkout, never from an index.
$(STAMP): pyproject.toml clove_sdk/pyproject.toml $(foreach p,$(PLUGINS),$(p)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e './clove_sdk[can,serial]' -e '.[test]' $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

demo: $(STAMP) bytecode
	$(BIN)/python -m hil.demo

demo-guarantees: $(STAMP)
	$(BIN)/python -m clove.demo

# The lint stage: style (ruff), types (mypy --strict), and the floors of docs/architecture.md
# (import-linter contracts in pyproject.toml). `make test` runs it first.
LINTED := clove clove_sdk hil plugins tests bench examples container
TYPED := clove clove_sdk hil plugins/serial/clove_driver_serial plugins/can/clove_driver_can plugins/gpio/clove_driver_gpio plugins/exchange/clove_driver_exchange

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/python -m mypy $(TYPED)
	$(BIN)/lint-imports

test: lint vm-setup fleet-setup ops-setup console-setup bytecode
	$(BIN)/python -m pytest -q

# The checkout's modules compiled once: a run starts hundreds of Python processes (kernels,
# driver hosts, CLI calls, and the test guest's, under emulation), and where
# PYTHONDONTWRITEBYTECODE is set (CI images often set it) each compiled every module it
# imported from source. The venv's packages are compiled by pip already.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 clove clove_sdk hil plugins tests bench examples

# The test guest (docs/testing.md): qemu, busybox-static, can-utils, gpiod tools by package name,
# a Debian kernel fetched into a cache outside the checkout ($$CLOVE_VM_CACHE, else
# ~/.cache/clove-vm), an initramfs and the gpio-sim module built there. Reused on later runs;
# where it cannot be set up, the reason is recorded and the guest tier skips with it.
vm-setup: $(STAMP)
	$(BIN)/python -m hil.vm setup

# The servers and tools some tests start, by Debian package, installed where missing (as root;
# elsewhere those tests skip with the reason): clove.testing.syspackages.
# The fleet tests' hub (docs/fleet.md), and ip for the boards' network namespaces.
fleet-setup: $(STAMP)
	$(BIN)/python -m clove.testing.syspackages --for tests/fleet nats-server=nats-server ip=iproute2

# The Prometheus server the metrics test scrapes with, and systemd-analyze for the unit file
# check (docs/metrics.md, README "Deploying on a board").
ops-setup: $(STAMP)
	$(BIN)/python -m clove.testing.syspackages --for "the Prometheus and systemd unit tests" prometheus=prometheus systemd-analyze=systemd

# The container image (docs/container.md): Debian's debootstrap and podman (installed where
# missing, as root), a minbase rootfs cached in $$CLOVE_IMAGE_CACHE (else ~/.cache/clove-image)
# and reused; rebuilt only when the sources it bakes in change. Prints the image reference.
image: $(STAMP)
	$(BIN)/python container/build.py

# The web console's browser test (tests/integration/test_console.py, docs/console.md): Debian's
# chromium and chromium-driver, installed where missing (as root; elsewhere that test skips
# with the reason). Selenium comes with the test extra.
console-setup: $(STAMP)
	$(BIN)/python -m clove.testing.syspackages --for "the console's browser test" chromium=chromium chromedriver=chromium-driver

# The whole guest tier, the long rover-on-a-Linux-board selection included.
test-vm: vm-setup
	CLOVE_VM_FULL=1 $(BIN)/python -m pytest -q tests/vm

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean-vm:
	rm -rf "$${CLOVE_VM_CACHE:-$$HOME/.cache/clove-vm}"

clean:
	rm -rf $(VENV) build *.egg-info
