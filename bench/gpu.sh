#!/usr/bin/env bash
# The GPU check of issue 24, one prepared script for a machine with an NVIDIA GPU and the CUDA toolkit
# (nvcc). Never part of CI. What it does, each step's output under ${OUT:-/tmp/ollama-magic-gpu}:
#   1. builds llama-cpp-python 0.3.36 with CUDA for this card only (CMAKE_CUDA_ARCHITECTURES=native) and
#      GGML_RPC, into .venv-gpu (the package and its test extra from this checkout);
#   2. builds llama.cpp's llama-server with CUDA from the same vendored llama.cpp tree (the anchor);
#   3. runs bench/plan_accuracy.py --gpu: planned vs allocated bytes on the GPU for every embedded model,
#      whole and with room for half its layers (a deliberately small OLLAMA_GPU_OVERHEAD room);
#   4. runs bench/concurrency.py at 1 and 4 streams, all layers on the GPU, ours vs llama-server;
#   5. runs bench/step_host.py: the host's share of a step, where llama_decode takes milliseconds.
# The machine needs the llama-cpp-python sdist (76.6 MB) if it has no network: LLAMA_CPP_SDIST=path.
# Usage: bench/gpu.sh            Results go in docs/BENCHMARKS.md with the card's name (nvidia-smi -L).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ollama-magic-gpu}
mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/card.txt"
SRC=${LLAMA_CPP_SDIST:-llama-cpp-python==0.3.36}
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_RPC=ON -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native"
export CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)}
test -x .venv-gpu/bin/python || python3 -m venv .venv-gpu
.venv-gpu/bin/pip install --quiet --no-cache-dir --no-deps "$SRC" 2>&1 | tail -3
.venv-gpu/bin/pip install --quiet -e '.[models,test]' 2>&1 | tail -3
.venv-gpu/bin/python -c "import llama_cpp; assert llama_cpp.llama_supports_gpu_offload(), 'no CUDA in this build'"
.venv-gpu/bin/python -c "from ollama_magic.engine import devices; [print(d) for d in devices.devices()]" | tee "$OUT/devices.txt"
# the anchor: llama-server with CUDA from the same llama.cpp (bench/build_llama_server.sh, CUDA flags added)
PREFIX=${LLAMA_SERVER_DIR:-$HOME/.cache/ollama-magic/llama-server-cuda}
if [[ ! -x "$PREFIX/bin/llama-server" ]]; then
  TREE=$(.venv-gpu/bin/python - <<'PY'
import glob, os
hits = glob.glob(os.path.expanduser("~/.cache/ollama-magic/llama-server/src/llama_cpp_python-0.3.36/vendor/llama.cpp"))
print(hits[0] if hits else "")
PY
)
  if [[ -z "$TREE" ]]; then PYTHON=.venv-gpu/bin/python bench/build_llama_server.sh >/dev/null; TREE=$HOME/.cache/ollama-magic/llama-server/src/llama_cpp_python-0.3.36/vendor/llama.cpp; fi
  cmake -S "$TREE" -B "$PREFIX/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_CUDA=on \
    -DCMAKE_CUDA_ARCHITECTURES=native -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$PREFIX/build" --target llama-server -j "$CMAKE_BUILD_PARALLEL_LEVEL" >/dev/null
  mkdir -p "$PREFIX/bin" && cp "$PREFIX/build/bin/llama-server" "$PREFIX/bin/" && echo "CUDA llama-server" > "$PREFIX/READY"
fi
.venv-gpu/bin/python bench/plan_accuracy.py --gpu 2>&1 | tee "$OUT/plan_accuracy.txt"
LLAMA_SERVER_DIR=$PREFIX LLAMA_SERVER_GPU_LAYERS=999 .venv-gpu/bin/python bench/concurrency.py --clients 1,4 --rounds 3 \
  2>&1 | tee "$OUT/concurrency.txt"
.venv-gpu/bin/python bench/step_host.py 2>&1 | tee "$OUT/step_host.txt"
echo "results in $OUT"
