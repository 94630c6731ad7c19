# Two entry points, both safe to run on a fresh machine (see README.md):
#   make demo   installs the package with its default models and runs the main job
#   make test   installs the package with its test extras and runs the whole test suite, then lists
#               the slowest tests
# and, for development: make test-fast (the unit tests alone, no model: seconds) and make
# browser-test (the widget panels in a real browser; needs root for apt-get, as .ci/run has).
#
# llama-cpp-python has no wheel on PyPI: pip builds it from source (several minutes on 2 cores) and
# keeps the wheel in its cache (~/.cache/pip), so later installs reuse it. GGML_NATIVE=OFF makes that
# cached wheel portable across CPUs; GGML_RPC=ON builds llama.cpp's RPC backend in (other machines'
# devices: `ollama-magic rpc-server`, README "Several machines (RPC)"). For a GPU, add its backend
# (README "GPU"), e.g. CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_RPC=ON -DGGML_CUDA=on".
#
# pip's wheel cache is keyed by the sdist, not by CMAKE_ARGS: a wheel cached without RPC (an older
# Makefile, a plain `pip install`) would be reused silently. So after installing, demo and test ask
# llama.cpp (llama_supports_rpc) and, when it has no RPC, drop the cached wheel and rebuild it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_RPC=ON
LLAMA_CPP_PYTHON := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)

ifneq (,$(findstring GGML_RPC=ON,$(CMAKE_ARGS)))
define ensure_rpc
	@$(BIN)/python -c 'import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_rpc())' 2>/dev/null || { \
	  echo "llama-cpp-python $(LLAMA_CPP_PYTHON) was installed from a wheel built without GGML_RPC (pip's cache ignores CMAKE_ARGS): rebuilding it with CMAKE_ARGS=\"$(CMAKE_ARGS)\""; \
	  $(BIN)/pip cache remove 'llama_cpp_python*' >/dev/null 2>&1 || true; \
	  $(BIN)/pip install --quiet --progress-bar off --force-reinstall --no-deps --no-binary llama-cpp-python \
	    'llama-cpp-python==$(LLAMA_CPP_PYTHON)' && \
	  $(BIN)/python -c 'import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_rpc())'; }
endef
endif
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: demo test test-fast venv browser-deps browser-test

venv:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)

demo: venv
	$(BIN)/pip install --quiet --progress-bar off -e '.[models,notebook]'
	$(ensure_rpc)
	$(BIN)/ollama-magic setup
	$(BIN)/ollama-magic list
	$(BIN)/ollama-magic show smollm2:135m
	$(BIN)/ollama-magic run --seed 42 --num-predict 64 smollm2:135m "Why is the sky blue? Answer in two sentences."
	$(BIN)/python -m ollama_magic.notebook.run notebooks/01-quickstart.ipynb

test: venv
	$(BIN)/pip install --quiet --progress-bar off -e '.[test]'
	$(ensure_rpc)
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
