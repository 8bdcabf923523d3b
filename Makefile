# Everything a newcomer needs: `make reproduce` (the full study) and `make test`.
# Both create .venv from this project's own files; only Python >= 3.11 and make are assumed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CORES  ?= 1

.PHONY: limited peers-4mb searches setup system-deps storage-deps storage data setup-slurm slurm-deps test-slurm test lint reproduce quick smoke report bench fuzz clean-results help test-deps

help:
	@echo "make reproduce   set up .venv and run the full study (snakemake --cores $(CORES))"
	@echo "make test        set up .venv and run the test suite"
	@echo "make quick       a shorter study (config/quick.yaml)"
	@echo "make storage     the storage study: readers x storage profiles (config/storage.yaml)"
	@echo "make data        the data study: small images, tar shards, encodings (config/data.yaml)"
	@echo "make report      build results/report.html from the finished results"
	@echo "make bench       print the package's own performance figures"
	@echo "make peers-4mb   the libraries users run on the study's 4 MB images (config/peers-4mb.yaml)"
	@echo "make searches    accelerators fed and streams sustained, every library (config/searches.yaml)"
	@echo "make limited     data larger than memory: page_cache limited vs cold and warm (config/limited.yaml)"
	@echo "make fuzz        every decoder and pipeline library over 2000 mutated files (results/fuzz)"
	@echo "make test-slurm  run the smoke study on a real SLURM cluster started here (root)"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "imgread needs Python >= 3.11; run: make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# fio measures the device ceiling when installed (the in-package O_DIRECT reader otherwise);
# the turbojpeg decoder needs libturbojpeg (PyTurboJPEG 1.8.3 loads it) and make bench compares
# it with tjbench (docs/decoders.md). As root with apt they are installed here; otherwise this
# says what to install.
system-deps: storage-deps
	@command -v fio >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing fio with apt-get"; \
	    apt-get install -y -q fio >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fio >/dev/null 2>&1; } || \
	      echo "imgread: apt-get could not install fio; the device ceiling will use the O_DIRECT reader"; \
	  else \
	    echo "imgread: fio is not installed; the device ceiling will use the O_DIRECT reader (for fio: sudo apt install fio)"; \
	  fi; }
	@{ /sbin/ldconfig -p 2>/dev/null | grep -q 'libturbojpeg\.so\.0 ' && command -v tjbench >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing libturbojpeg0 and libjpeg-turbo-progs with apt-get (the turbojpeg decoder, tjbench)"; \
	    { apt-get install -y -q libturbojpeg0 libjpeg-turbo-progs >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libturbojpeg0 libjpeg-turbo-progs >/dev/null 2>&1; }; } || \
	      echo "imgread: apt-get could not install libturbojpeg0; the turbojpeg decoder will say it is unavailable"; \
	  else \
	    echo "imgread: libturbojpeg or tjbench is not installed; the turbojpeg decoder needs the library, make bench compares it with tjbench (Debian/Ubuntu: sudo apt install libturbojpeg0 libjpeg-turbo-progs; Fedora: sudo dnf install turbojpeg libjpeg-turbo-utils; macOS: brew install jpeg-turbo)"; \
	  fi; }

# The http storage profiles (docs/storage.md) serve the dataset with nginx and its echo module
# (the per-request latency) in a network namespace; installed with apt as root, else said.
storage-deps:
	@{ command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx; } && test -e /usr/lib/nginx/modules/ngx_http_echo_module.so || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nginx-light and libnginx-mod-http-echo with apt-get (the http storage profiles)"; \
	    { apt-get install -y -q --no-install-recommends nginx-light libnginx-mod-http-echo >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends nginx-light libnginx-mod-http-echo >/dev/null 2>&1; }; } || \
	      echo "imgread: apt-get could not install nginx; the http storage profiles will be skipped (the run says so)"; \
	  else \
	    echo "imgread: nginx and its echo module are not installed; the http storage profiles will be skipped (for them: sudo apt install nginx-light libnginx-mod-http-echo, and run as root)"; \
	  fi; }

# strace proves, in the tests, that the S3 SDKs reach only the emulated endpoint and open no
# credential file (docs/storage-clients.md); without it that test is skipped and says why.
test-deps:
	@command -v strace >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing strace with apt-get (the S3 clients' network trace test)"; \
	    apt-get install -y -q strace >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q strace >/dev/null 2>&1; } || \
	      echo "imgread: apt-get could not install strace; the S3 clients' trace test will be skipped"; \
	  else \
	    echo "imgread: strace is not installed; the S3 clients' trace test will be skipped (for it: sudo apt install strace)"; \
	  fi; }

setup: $(STAMP) system-deps

test: setup test-deps
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src workflow/scripts tests
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

reproduce: setup
	@mkdir -p results && : > $(LAST_STUDY)
	$(BIN)/snakemake --cores $(CORES)

# The studies of an overlay config, each config/<target>.yaml on top of config.yaml, noted in
# $(LAST_STUDY) for `make report`. Two cores draw the figures two at a time; trials stay one at
# a time (timing=1), and every job that could run beside one (references, caches, the device
# ceiling) holds `timing` too.
#   quick      the shorter study (under 10 minutes here)
#   storage    every load reader on every storage profile, 1 to 64 in flight (docs/storage.md;
#              about 20 minutes, measured 18.5)
#   data       ImageNet-like images loose and in tar shards, load and DataLoader, local and
#              object store; decode rate per encoding (docs/data.md)
#   peers-4mb  the libraries users run on the study's 4 MB images beside torch
#              (docs/pipelines.md; about 25 minutes)
#   searches   the answer in the job's units for every pipeline and stream producer: the
#              bounded searches alone (docs/searches.md; about 45 minutes)
#   limited    data larger than memory: page_cache limited, 4 shuffled epochs under a memory
#              limit, beside cold and warm (docs/limited.md; about 25 minutes)
#   smoke      the tiny grid the tests run
OVERLAYS := quick storage data peers-4mb searches limited smoke
$(OVERLAYS): setup
	@mkdir -p results && echo config/$@.yaml > $(LAST_STUDY)
	$(BIN)/snakemake --cores 2 --configfile config/$@.yaml

# `make report` shows the study make last ran: reproduce, quick and smoke note their config
# here. The workflow refuses a report whose tables were made with another config.
LAST_STUDY := results/.last-study-config
STUDY_CONFIG = $(shell cat $(LAST_STUDY) 2>/dev/null)

# The study on a real SLURM cluster started on this machine for the test (see tests/workflow/test_slurm.py):
# slurm-wlm and munge are installed with apt when missing (as root), the executor plugin with pip.
SLURM_STAMP := $(VENV)/.slurm-stamp

$(SLURM_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,slurm]'
	touch $(SLURM_STAMP)

setup-slurm: $(SLURM_STAMP)

slurm-deps:
	@missing=""; for c in munged slurmctld slurmd sbatch; do command -v $$c >/dev/null 2>&1 || test -x /usr/sbin/$$c || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing slurm-wlm and munge with apt-get (missing:$$missing)"; \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }; } || exit 1; \
	  else \
	    echo "make test-slurm needs root and the Debian packages slurm-wlm and munge (missing:$$missing): sudo apt install slurm-wlm munge, then run it as root"; exit 2; \
	  fi; \
	fi

test-slurm: setup-slurm slurm-deps
	$(BIN)/python -m pytest -m slurm -s tests/workflow/test_slurm.py

report: setup
	$(BIN)/snakemake --cores 1 $(if $(STUDY_CONFIG),--configfile $(STUDY_CONFIG)) --report results/report.html

bench: setup
	$(BIN)/python -m imgread.bench

# Seeded mutations of small JPEG, PNG and WebP files, each decoded by every installed decoder in
# a sandboxed child (time and memory bounded); FUZZ_FILES and FUZZ_SEED choose the run.
FUZZ_FILES ?= 2000
FUZZ_SEED  ?= 0
fuzz: setup
	$(BIN)/python -m imgread.decoders.fuzz --pipelines --files $(FUZZ_FILES) --seed $(FUZZ_SEED) --out results/fuzz

clean-results:
	rm -rf results/datasets results/trials results/tables results/figures results/logs results/report results/report.html $(LAST_STUDY)
