# Two commands on a fresh machine: `make serve` and `make test`. Both create .venv/ if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint serve clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	$(VENV)/bin/pytest

serve: $(STAMP)
	@echo "make serve arrives with the server issue (#6); for now see 'python -m models list'."

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
