# Quick start: `make demo` runs the demo, `make test` runs the test suite.
# Each creates the virtual environment .venv and installs jaxmirror into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test docs notebooks bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m jaxmirror.demo --out demo.png

test: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2 -q

$(VENV)/.docs: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $@

# The documentation site (site/), warnings as errors; its generated pages first.
docs: $(VENV)/.docs
	$(BIN)/python -m jaxmirror._docs_reference
	$(BIN)/python -m jaxmirror._config_reference > docs/configuration.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Re-execute every notebook from its paired script and store it with its outputs.
notebooks: $(VENV)/.installed
	$(BIN)/python scripts/execute_notebooks.py

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/core.py

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) demo.png site
