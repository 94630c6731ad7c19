#!/usr/bin/env bash
# Build llama.cpp's llama-server (the batching anchor of bench/concurrency.py) from the llama.cpp tree
# vendored in the pinned llama-cpp-python sdist, so the anchor runs the same llama.cpp as our wheel
# (ggml-org/llama.cpp@0c1e57098 for 0.3.36). Portable instruction set (-DGGML_NATIVE=OFF), like the wheel.
# Usage: bench/build_llama_server.sh [PREFIX]   (default: $LLAMA_SERVER_DIR or ~/.cache/ollama-magic/llama-server)
# Result: PREFIX/bin/llama-server and PREFIX/READY (the commit it was built from). Does nothing if READY exists.
set -euo pipefail
VERSION=0.3.36
PREFIX=${1:-${LLAMA_SERVER_DIR:-$HOME/.cache/ollama-magic/llama-server}}
if [[ -f "$PREFIX/READY" && -x "$PREFIX/bin/llama-server" ]]; then
  echo "llama-server already built: $PREFIX/bin/llama-server"; exit 0
fi
mkdir -p "$PREFIX/src"
SDIST="$PREFIX/src/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
  PY=${PYTHON:-python3}
  "$PY" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$PREFIX/src"
fi
if [[ ! -d "$PREFIX/src/llama_cpp_python-$VERSION" ]]; then
  tar xzf "$SDIST" -C "$PREFIX/src"
fi
TREE="$PREFIX/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$TREE" -B "$PREFIX/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
  -DBUILD_SHARED_LIBS=OFF
cmake --build "$PREFIX/build" --target llama-server -j "${JOBS:-2}"
mkdir -p "$PREFIX/bin"
cp "$PREFIX/build/bin/llama-server" "$PREFIX/bin/llama-server"
echo "llama-server from llama-cpp-python $VERSION sdist (vendored llama.cpp, GGML_NATIVE=OFF), built $(date -u +%FT%TZ)" > "$PREFIX/READY"
echo "built $PREFIX/bin/llama-server"
