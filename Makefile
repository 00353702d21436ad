# Every target creates .venv if missing and (re)installs the project when pyproject.toml changes.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# Nothing here downloads weights or datasets: fail fast instead of retrying a hub for a minute.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install test lint bench bench-deps spark-deps demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing mmssl and its dependencies into $(VENV) (first time: a few minutes)"
	$(PY) -m pip install -q -e '.[test,onnx]' 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check mmssl indexing demo tests benchmarks
	$(VENV)/bin/ruff format --check mmssl indexing demo tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_infonce.py

# The peer trainer of benchmarks/bench_openclip_train.py (open_clip_train) needs open_clip's training extra.
bench-deps: $(STAMP)
	$(PY) -m pip install -q -e '.[test,onnx,bench]'

# PySpark for `--engine spark` (a Java 17+ runtime too: Debian's openjdk-17-jre-headless).
spark-deps: $(STAMP)
	$(PY) -m pip install -q -e '.[test,onnx,spark]' 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }

# Debian packages of the demo's emoji image set (installed when missing and apt-get can; without
# them the demo opens without its image tabs and says so).
EMOJI_PACKAGES := fonts-noto-color-emoji unicode-cldr-core unicode-data

demo: $(STAMP)
	@dpkg -s $(EMOJI_PACKAGES) >/dev/null 2>&1 || { \
	  echo "installing the Debian packages of the emoji image set: $(EMOJI_PACKAGES)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	      --no-install-recommends $(EMOJI_PACKAGES) >/dev/null; } \
	  || echo "could not install them: the demo opens without its image tabs"; }
	$(VENV)/bin/mmssl demo default

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
