"""Retrieval quality with known answers (``facts_corpus``): hit rate at 5 with all-minilm embeddings and
exact cosine search, then after reranking the top 20 with the chat-model path (smollm2, gemma3) and with
the tiny cross-encoder of random weights (``tests/fixtures/tiny_cross_encoder.py``: a plumbing fixture,
expected near chance). Hit rates are deterministic (one run); the timings are 3 runs each.

``python bench/rerank_quality.py [--questions N] [--chat-questions M]``: the chat models rerank the first
M questions only (each is 20 scoring passes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.facts_corpus import facts_corpus  # noqa: E402
from ollama_magic import Engine  # noqa: E402
from ollama_magic.defaults import register  # noqa: E402
from ollama_magic.store import ModelStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = 20
K = 5


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def hit_rate(rankings: list[list[int]], answers: list[int], k: int = K) -> float:
    return sum(answer in ranking[:k] for ranking, answer in zip(rankings, answers)) / len(answers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--chat-questions", type=int, default=40)
    args = parser.parse_args()
    corpus = facts_corpus()
    questions = corpus.questions[:args.questions]
    answers = [q.answer for q in questions]
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(Path(tmp) / "models")
        for name in ("all-minilm", "smollm2:135m", "gemma3:270m"):
            register(store, name)
        model_dir = Path(tmp) / "tiny-cross-encoder"
        subprocess.run([sys.executable, str(ROOT / "tests" / "fixtures" / "tiny_cross_encoder.py"), str(model_dir)],
                       check=True, capture_output=True)
        with Engine(store) as engine:
            engine.create("tiny-reranker", from_=str(model_dir))
            print(f"corpus: {len(corpus.documents)} documents, {len(questions)} questions ({load()})")
            start = time.perf_counter()
            docs = np.asarray(engine.embed("all-minilm", corpus.documents).embeddings)
            print(f"embedded the corpus in {time.perf_counter() - start:.1f} s ({load()})")
            queries = np.asarray(engine.embed("all-minilm", [q.text for q in questions]).embeddings)
            order = np.argsort(-(queries @ docs.T), axis=1)  # unit vectors: exact cosine
            retrieved = [list(map(int, row[:CANDIDATES])) for row in order]
            print(f"all-minilm hit@1 {hit_rate(retrieved, answers, 1):.3f}  hit@{K} {hit_rate(retrieved, answers):.3f}  "
                  f"recall@{CANDIDATES} {hit_rate(retrieved, answers, CANDIDATES):.3f}")

            def reranked(model: str, n: int) -> list[list[int]]:
                out = []
                for question, candidates in zip(questions[:n], retrieved[:n]):
                    reply = engine.rerank(model, question.text, [corpus.documents[i] for i in candidates])
                    out.append([candidates[r.index] for r in reply.results])
                return out

            for model, n in (("tiny-reranker", len(questions)), ("smollm2:135m", args.chat_questions),
                             ("gemma3:270m", args.chat_questions)):
                engine.rerank(model, "warm up", ["a", "b"])  # the load is not timed
                start = time.perf_counter()
                ranked = reranked(model, n)
                seconds = time.perf_counter() - start
                print(f"{model}: on the first {n} questions, retrieval alone hit@1 {hit_rate(retrieved[:n], answers[:n], 1):.3f} "
                      f"hit@{K} {hit_rate(retrieved[:n], answers[:n]):.3f}; reranked hit@1 {hit_rate(ranked, answers[:n], 1):.3f} "
                      f"hit@{K} {hit_rate(ranked, answers[:n]):.3f}; {n * CANDIDATES / seconds:.1f} documents/s ({load()})")
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    engine.rerank(model, questions[0].text, [corpus.documents[i] for i in retrieved[0]])
                    times.append(time.perf_counter() - start)
                print(f"  one query x {CANDIDATES} documents: median {statistics.median(times):.2f} s "
                      f"(min {min(times):.2f}, max {max(times):.2f}) ({load()})")


if __name__ == "__main__":
    main()
