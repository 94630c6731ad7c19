"""Engine overhead and multi-turn prefix reuse, measured against raw llama-cpp-python.

1. Decode tokens/s of Engine.generate vs a raw ``Llama.generate`` loop on the same GGUF with the same
   context size, threads and greedy sampling (target: ratio >= 0.97).
2. Time to first token of turn 2 of a chat with a ~1k-token history vs the same prompt sent cold
   (target: >= 5x faster, from reusing the KV cache of the shared prefix).

Ratios, not absolute numbers: these machines are shared and noisy. Each figure is the median of
several alternating runs.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import llama_cpp

from ollama_magic import Engine
from ollama_magic.engine.runner import physical_cores

from _models import engine_with

MODEL = "gemma3:270m"
PROMPT = "Write a long, detailed essay about the history of the printing press."


def raw_decode_rate(path: Path, tokens: list[int], n: int) -> tuple[float, int]:
    """Load and decode on a thread of its own, as the engine does.

    llama.cpp's OpenMP workers keep spinning for a while after each call, per calling thread; if the
    anchor ran on the main thread its idle spinners would steal the 2 cores from the engine's thread
    (and the other way round), and the ratio would measure that instead of our overhead.
    """
    result: list[tuple[float, int]] = []
    worker = threading.Thread(target=lambda: result.append(_raw_decode(path, tokens, n)))
    worker.start()
    worker.join()
    return result[0]


def _raw_decode(path: Path, tokens: list[int], n: int) -> tuple[float, int]:
    # flash attention on: what the engine's default ("auto", OLLAMA_FLASH_ATTENTION unset) resolves to here
    llm = llama_cpp.Llama(str(path), n_ctx=4096, n_batch=512, n_ubatch=512, n_threads=physical_cores(),
                          n_threads_batch=physical_cores(), n_gpu_layers=0, flash_attn=True, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        count, first = 0, 0.0
        for token in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0):
            if count == 0:
                first = time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(vocab, token) or count >= n:
                break
            llm.detokenize([token])
            count += 1
        return (count - 1) / (time.perf_counter() - first), count
    finally:
        llm.close()


def engine_decode_rate(engine: Engine, n: int) -> tuple[float, int]:
    r = engine.generate(MODEL, PROMPT, options={"temperature": 0, "num_predict": n, "stop": []})
    return r.eval_count / (r.eval_duration / 1e9), r.eval_count


def long_history(engine: Engine, target_tokens: int) -> list[dict[str, str]]:
    paragraph = ("Notebooks mix code, prose and results. A local model answers questions about the data "
                 "without sending anything to a remote service. ")
    history = [{"role": "system", "content": "You are a concise data-science assistant."}]
    turn = 0
    while True:
        turn += 1
        history.append({"role": "user", "content": f"Question {turn}: " + paragraph * 3})
        history.append({"role": "assistant", "content": f"Answer {turn}: " + paragraph * 2})
        probe = engine.chat(MODEL, history + [{"role": "user", "content": "ok"}], options={"num_predict": 1})
        if probe.prompt_eval_count >= target_tokens:
            return history


def ttft(engine: Engine, messages: list[dict[str, str]]) -> tuple[float, str, int]:
    start = time.perf_counter()
    first = None
    parts = []
    final = None
    for chunk in engine.chat(MODEL, messages, stream=True, options={"num_predict": 24, "temperature": 0}):
        if first is None:
            first = time.perf_counter() - start
        parts.append(chunk.message.content)
        final = chunk
    return first or 0.0, "".join(parts), final.prompt_eval_count if final else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens to decode per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--history", type=int, default=1000, help="approximate history length in tokens")
    args = parser.parse_args()

    with engine_with(MODEL) as engine:
        store = engine.store
        path = store.find(MODEL).model_path
        engine.generate(MODEL, "warm up", options={"num_predict": 4})
        runner = engine.scheduler.loaded()[0].runner
        prompt_text = engine._template(store.find(MODEL), None).render_generate(PROMPT, "")
        tokens = runner.tokenize(prompt_text)
        ours, raw = [], []
        for _ in range(args.runs):
            ours.append(engine_decode_rate(engine, args.tokens)[0])
            engine.unload(MODEL)  # give the raw run the memory and cores to itself
            raw.append(raw_decode_rate(path, tokens, args.tokens)[0])
            engine.generate(MODEL, "warm up", options={"num_predict": 1})
        ours_rate, raw_rate = statistics.median(ours), statistics.median(raw)

        history = long_history(engine, args.history)
        question = {"role": "user", "content": "Summarise the discussion in one sentence."}
        turn2, cold = [], []
        for _ in range(args.runs):
            engine.unload(MODEL)
            engine.generate(MODEL, "", keep_alive="10m")  # loaded, empty cache
            _, reply, _ = ttft(engine, history + [question])  # turn 1
            turn2_messages = history + [question, {"role": "assistant", "content": reply},
                                        {"role": "user", "content": "And in five words?"}]
            t2, _, n2 = ttft(engine, turn2_messages)
            engine.unload(MODEL)
            engine.generate(MODEL, "", keep_alive="10m")
            tc, _, _ = ttft(engine, turn2_messages)  # the same prompt, cold
            turn2.append(t2)
            cold.append(tc)
        t2, tc = statistics.median(turn2), statistics.median(cold)

    print(f"model {MODEL}, {physical_cores()} threads, CPU, n_ctx 4096, greedy; median of {args.runs} runs")
    print(f"{'benchmark':<44}{'ours':>12}{'anchor':>12}{'ratio':>9}  target")
    print(f"{'decode tokens/s (engine vs raw llama-cpp)':<44}{ours_rate:>12.1f}{raw_rate:>12.1f}"
          f"{ours_rate / raw_rate:>9.3f}  >= 0.97")
    print(f"{f'TTFT turn 2, {n2}-token prompt (s) vs cold':<44}{t2:>12.3f}{tc:>12.3f}{tc / t2:>8.1f}x  >= 5x")


if __name__ == "__main__":
    main()
