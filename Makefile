# Two entry points, both safe to run on a fresh machine (see README.md):
#   make demo   installs the package with its default models and runs the main job
#   make test   installs the package with its test extras and runs the whole test suite, then lists
#               the slowest tests
# and, for development: make test-fast (the unit tests alone, no model: seconds) and make
# browser-test (the widget panels in a real browser; needs root for apt-get, as .ci/run has).
#
# llama-cpp-python has no wheel on PyPI: pip builds it from source (several minutes on 2 cores) and
# keeps the wheel in its cache (~/.cache/pip), so later installs reuse it. GGML_NATIVE=OFF makes that
# cached wheel portable across CPUs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: demo test test-fast venv browser-deps browser-test

venv:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)

demo: venv
	$(BIN)/pip install --quiet --progress-bar off -e '.[models,notebook]'
	$(BIN)/ollama-magic setup
	$(BIN)/ollama-magic list
	$(BIN)/ollama-magic show smollm2:135m
	$(BIN)/ollama-magic run --seed 42 --num-predict 64 smollm2:135m "Why is the sky blue? Answer in two sentences."
	$(BIN)/python -m ollama_magic.notebook.run notebooks/01-quickstart.ipynb

test: venv
	$(BIN)/pip install --quiet --progress-bar off -e '.[test]'
	$(BIN)/python -m pytest --durations=25

# Everything not marked integration (tests/conftest.py marks tests/integration, tests/browser and the
# notebooks): no model is loaded.
test-fast: venv
	$(BIN)/pip install --quiet --progress-bar off -e '.[test]'
	$(BIN)/python -m pytest -m "not integration" -q

# What the real-browser test needs: playwright and jupyterlab (the [browser] extra) and Debian's
# chromium (Playwright's own browser download cannot work here), which needs root for apt-get.
# Without them `make test` skips that test and says which package is missing.
browser-deps: venv
	$(BIN)/pip install --quiet --progress-bar off -e '.[test,browser]'
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# The widget panels in a real browser: JupyterLab on 127.0.0.1 driven by Playwright. Screenshots go
# to /tmp/ollama-magic-browser/.
browser-test: browser-deps
	$(BIN)/python -m pytest tests/browser -q -s
