# perfbook — `make demo` runs every runbook section on the built-in demo stack;
# `make test` runs the tests. Both set up what they need first (see tools/bootstrap.sh).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.perfbook-installed
NODESVC := tests/nodesvc

.PHONY: setup system hooks notebooks demo test unit lab clean-outputs

setup: system $(STAMP) hooks $(NODESVC)/node_modules/.package-lock.json

# The pre-commit hook that refuses notebooks/*.ipynb with outputs or out of step with their
# notebooks/*.py sources (only when none is installed).
hooks:
	@if [ -d .git ] && [ ! -e .git/hooks/pre-commit ]; then \
	  mkdir -p .git/hooks && cp tools/pre-commit .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit && \
	  echo "perfbook: installed .git/hooks/pre-commit (refuses notebooks/*.ipynb with outputs or not built from their .py)"; fi

system:
	@tools/bootstrap.sh system

$(STAMP): pyproject.toml
	@tools/bootstrap.sh venv $(VENV)
	@touch $(STAMP)

# The stock Node.js service the tests run (tests/integration/test_node_service.py).
$(NODESVC)/node_modules/.package-lock.json: $(NODESVC)/package-lock.json
	@tools/bootstrap.sh npm $(NODESVC)

# notebooks/<section>.ipynb is built from notebooks/<section>.py (jupytext percent format), the source.
notebooks: $(STAMP)
	$(PY) tools/nbbuild.py

# Exit 1 means "the report has critical findings" — what the incident scenario is for.
demo: setup
	@$(VENV)/bin/perfbook demo $(DEMO_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 1 ] || exit $$rc

test: setup
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not integration" $(PYTEST_ARGS)

# JupyterLab on a workspace of its own (outputs/YYYY-MM-DD/HHMMSS-lab-<incident>/): the demo stack
# `perfbook demo --keep` left up, else a new one (stopped when Lab exits); LAB_ARGS="-p FILE" for a
# real service. The notebooks there already point at it; `perfbook report FOLDER` makes the report.
lab: setup
	@$(VENV)/bin/perfbook lab $(LAB_ARGS)

clean-outputs:
	@echo "Reports are never deleted by make; remove outputs/<date>/ folders by hand if you must."
