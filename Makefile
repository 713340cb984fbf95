# gputuned: the two set-up commands are `make run` and `make test`.
VENV        ?= .venv
PYTHON      ?= python3
PY          := $(VENV)/bin/python
# The CPU build of torch is enough for the simulated node and CI. On a GPU host pass
# TORCH_SPEC=torch (or keep an existing torch in the venv) to get the usual CUDA build.
TORCH_SPEC  ?= torch==2.13.0
STAMP       := $(VENV)/.installed
CONFIG      ?=
PYTEST_ARGS ?=
RUN_ARGS    ?=

.PHONY: run test lint bench clean dashboards prometheus deb debtools

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install -q '$(TORCH_SPEC)'
	$(PY) -m pip install -q -e '.[dev,adapters,web,kubernetes]' "torch==$$($(PY) -c 'import torch; print(torch.__version__)')"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gputuned run $(if $(CONFIG),--config $(CONFIG)) $(RUN_ARGS)

# Debian's prometheus package (server and promtool) for the integration tests.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "prometheus/promtool missing and not root: integration tests will be skipped" >&2; fi; }

PACKAGES := pkg collectors daemon tuner trainer_plugin dashboards

# Debian's python3-venv, with which tests/test_packaging_deb.py builds the Debian package.
debtools:
	@dpkg-query -W -f='$${Status}' python3.11-venv 2>/dev/null | grep -q 'ok installed' || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; \
	  else echo "python3-venv missing and not root: the Debian package test will be skipped" >&2; fi; }

test: $(STAMP) prometheus debtools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(PACKAGES)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(PACKAGES)

# The Debian 12 package, build/deb/gputuned_<version>-1_<arch>.deb: a venv under /opt/gputuned,
# the unit, sysusers, tmpfiles and the config (docs/deployment.md). Needs python3-venv; pins the
# carried packages to .venv's versions when .venv exists.
deb:
	packaging/build-deb.sh build/deb

bench: $(STAMP)
	$(PY) bench/daemon_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
