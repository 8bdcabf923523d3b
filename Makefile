# Everything a newcomer needs: `make reproduce` (the full study) and `make test`.
# Both create .venv from this project's own files; only Python >= 3.11 and make are assumed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CORES  ?= 1

.PHONY: setup test lint reproduce quick smoke report bench clean-results help

help:
	@echo "make reproduce   set up .venv and run the full study (snakemake --cores $(CORES))"
	@echo "make test        set up .venv and run the test suite"
	@echo "make quick       a shorter study (config/quick.yaml)"
	@echo "make report      build results/report.html from the finished results"
	@echo "make bench       print the package's own performance figures"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "imgread needs Python >= 3.11; run: make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src workflow/scripts tests
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

reproduce: setup
	$(BIN)/snakemake --cores $(CORES)

quick: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/quick.yaml

smoke: setup
	$(BIN)/snakemake --cores 2 --configfile config/smoke.yaml

# The report shows the study the tables were made from: its config files are in study.json
# (config/config.yaml is always loaded; the others are passed again with --configfile).
STUDY_CONFIGS = $(shell test -f results/tables/study.json && $(BIN)/python -c 'import json; print(" ".join(f for f in json.load(open("results/tables/study.json"))["config_files"] if f != "config/config.yaml"))')

report: setup
	@test -f results/tables/study.json || { echo "make report: no results/tables/study.json yet; run make quick or make reproduce first"; exit 2; }
	$(BIN)/snakemake --cores 1 $(if $(strip $(STUDY_CONFIGS)),--configfile $(STUDY_CONFIGS)) --report results/report.html

bench: setup
	$(BIN)/python -m imgread.bench

clean-results:
	rm -rf results/datasets results/trials results/tables results/figures results/logs results/report.html
