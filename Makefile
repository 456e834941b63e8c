PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench lint docs dist mutants clean

install: $(STAMP)

# Re-runs only when the dependency files change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/reslab demo

# Two workers of one thread each: on 2 cores this halves the run (17 -> 8.5 min measured on an
# AMD EPYC VM); one process with two threads spends its time in single-threaded compiles and I/O.
# The tests against a local Slurm (marked slurm; skipped without slurm-wlm and munge) run after, in
# one process of their own: they start the cluster once, and an xdist worker's captured output does
# not survive their jobs.
WORKERS ?= 2
test: install
	$(BIN)/ruff check src tests benchmarks
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(WORKERS) -m 'not slow and not gpu and not slurm'
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:xdist -m slurm tests/test_slurm.py

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/reslab bench

# The documentation site into site/: strict, so a broken link or anchor, a missing reference or a
# docstring mkdocstrings cannot render fails. docs/hooks.py writes the CLI, config and API references.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The sdist and the wheel into dist/, checked by twine (tests/test_package.py installs the wheel).
dist: install
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/twine check --strict dist/*

# Mutation testing (hours on 2 cores, not in CI): the modules and tests are in pyproject.toml's
# [tool.mutmut]; it resumes where it stopped. Score and accepted survivors: docs/mutants.md.
# MODULES="train/step.py evaluate.py" tries only the mutants of those modules not tried yet.
# A run without results of its own starts from the verdicts saved in benchmarks/results/mutants.json
# (`python benchmarks/mutants.py save` keeps a run's; mutmut drops those of changed functions).
# mutmut copies a file into mutants/ only once: the current sources go there first (same mtime, so
# the modules under test are mutated afresh; results stay for every function whose source is unchanged).
mutants: install
	$(BIN)/python -m pip install -q -c constraints.txt 'mutmut>=3.8'
	$(BIN)/python benchmarks/mutants.py restore
	mkdir -p mutants && cp -rp src tests mutants/
	names=$$($(if $(MODULES),$(BIN)/python benchmarks/mutants.py unchecked $(MODULES),true)) && \
	  OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(WORKERS) $$names
	$(BIN)/python benchmarks/mutants.py save
	$(BIN)/python benchmarks/mutants.py table

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache
