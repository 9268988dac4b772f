# The README's two commands: `make demo` (set up, then recommend for a real user) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
LLMREC := $(VENV)/bin/llmrec
USER_ID ?= 196

.PHONY: install bootstrap browser demo test lint bench clean baselines eval

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first: the CPU wheel lies on these machines; a bare `torch` requirement would pull CUDA builds.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# PyPI's torchvision/torchaudio are CUDA builds that break `import torchvision`; text models need none.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

install: $(VENV)/.installed

bootstrap: install
	$(LLMREC) bootstrap

demo: bootstrap
	$(LLMREC) recommend --user $(USER_ID) --explain

# Lint first: an import that runs back up a layer, or a cycle, fails the build before the suite runs.
lint: install
	$(VENV)/bin/ruff check .
	$(PY) tools/lint_imports.py

# The chat page's test (tests/entrypoints/api/test_page_browser.py) drives Debian's chromium through Playwright's
# `executable_path`, never a browser Playwright downloads; without it that test fails (LLMREC_SKIP_BROWSER=1 skips it).
CHROMIUM := /usr/bin/chromium

browser:
	@if [ -x $(CHROMIUM) ]; then echo "browser: $$($(CHROMIUM) --version 2>/dev/null)"; \
	elif ! command -v apt-get >/dev/null; then echo "browser: $(CHROMIUM) is missing and there is no apt-get: install Chromium there" >&2; exit 1; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	elif command -v sudo >/dev/null; then sudo apt-get update -q && sudo apt-get install -y -q chromium; \
	else echo "browser: $(CHROMIUM) is missing; as root run: apt-get install -y chromium" >&2; exit 1; fi

test: lint bootstrap browser
	$(PY) -m pytest -q -p no:cacheprovider

# SASRec (RecBole 1.2.1) as an external peer for `llmrec eval --baselines sasrec`. RecBole's pins clash with
# vLLM's, so it gets its own venv; torch first (CPU wheel), ray/setuptools pinned for `recbole.quick_start`.
# The other peer, `--baselines als` (implicit 0.7.3), comes with the [eval]/[dev] extras of the main venv.
RECBOLE_VENV ?= .venv-recbole

$(RECBOLE_VENV)/.installed:
	python3 -m venv $(RECBOLE_VENV)
	$(RECBOLE_VENV)/bin/python -m pip install -q torch==2.13.0
	$(RECBOLE_VENV)/bin/python -m pip install -q recbole==1.2.1 "numpy<2" "scipy<1.13" "pandas<3" "ray==2.6.3" "setuptools<81"
	touch $@

baselines: $(RECBOLE_VENV)/.installed

eval: bootstrap
	$(LLMREC) eval --dataset ml-100k --scenario movies --out reports/ml100k

clean:
	rm -rf $(VENV) $(RECBOLE_VENV) .llmrec
