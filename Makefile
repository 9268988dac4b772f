# The README's two commands: `make demo` (set up, then recommend for a real user) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
LLMREC := $(VENV)/bin/llmrec
USER_ID ?= 196

.PHONY: install bootstrap demo test bench clean

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

test: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .llmrec
