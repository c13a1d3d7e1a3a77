# perfbook — `make demo` runs every runbook section on the built-in demo stack;
# `make test` runs the tests. Both set up what they need first (see tools/bootstrap.sh).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.perfbook-installed

.PHONY: setup system demo test unit lab clean-outputs

setup: system $(STAMP)

system:
	@tools/bootstrap.sh system

$(STAMP): pyproject.toml
	@tools/bootstrap.sh venv $(VENV)
	@touch $(STAMP)

# Exit 1 means "the report has critical findings" — what the incident scenario is for.
demo: setup
	@$(VENV)/bin/perfbook demo $(DEMO_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 1 ] || exit $$rc

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not integration" $(PYTEST_ARGS)

# JupyterLab on notebooks/. With a stack left up by `perfbook demo --keep`, its database URL is
# exported for the kernels and PERFBOOK_DEMO_PARAMS names its params file.
lab: setup
	@eval "$$($(VENV)/bin/perfbook demo env 2>/dev/null)"; \
	  if [ -n "$$PERFBOOK_DEMO_PARAMS" ]; then echo "demo stack params: $$PERFBOOK_DEMO_PARAMS (set params_file to it)"; fi; \
	  $(VENV)/bin/jupyter lab --ip 127.0.0.1 --notebook-dir notebooks

clean-outputs:
	@echo "Reports are never deleted by make; remove outputs/<date>/ folders by hand if you must."
