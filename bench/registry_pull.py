"""Registry pull: throughput of ``Engine.pull`` from a local registry vs ``curl`` downloading the same
blob from the same registry in the same run, and the pulling process's memory while it pulls.

The registry is Debian's ``docker-registry`` on 127.0.0.1 holding gemma3:270m (pushed by us first).
Each round pulls the whole model into an empty store (downloading, verifying the sha256, writing the
manifest) and times ``curl -o`` of its 268 MB weights blob, in alternating order. RSS is sampled every
5 ms during our pulls. Targets: throughput >= 0.9x curl; RSS flat (no whole-blob buffers: the growth
stays far below the blob's size).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ollama_magic import Engine
from ollama_magic.defaults import register
from ollama_magic.store import ModelStore

from _registry import DockerRegistry


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


class PeakRSS:
    """The highest RSS seen while the ``with`` block runs (sampled every 5 ms)."""

    def __enter__(self) -> "PeakRSS":
        self.peak, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not DockerRegistry.available():
        print("not measured: needs Debian's docker-registry package (apt-get install docker-registry)")
        return
    with tempfile.TemporaryDirectory() as tmp, DockerRegistry(Path(tmp) / "registry") as registry:
        source = ModelStore(Path(tmp) / "source")
        register(source, "gemma3:270m")
        name = f"{registry.host}/library/gemma3:270m"
        with Engine(source) as engine:
            engine.copy("gemma3:270m", name)
            engine.push(name, insecure=True)
        blob = source.find(name).manifest.layer("application/vnd.ollama.image.model")
        blob_url = f"{registry.url}/v2/library/gemma3/blobs/{blob.digest}"
        target = Path(tmp) / "pulled"
        ours, curls, growth = [], [], []

        def pull() -> None:
            shutil.rmtree(target, ignore_errors=True)
            with Engine(ModelStore(target)) as engine:
                before = rss_mb()
                with PeakRSS() as peak:
                    start = time.perf_counter()
                    assert engine.pull(name, insecure=True).status == "success"
                    ours.append(time.perf_counter() - start)
                growth.append(peak.peak - before)

        def curl() -> None:
            out = Path(tmp) / "curl.out"
            out.unlink(missing_ok=True)
            start = time.perf_counter()
            subprocess.run(["curl", "-sSf", "-o", str(out), blob_url], check=True)
            curls.append(time.perf_counter() - start)

        pull()  # warm-up (imports, the registry's caches); not counted
        ours.clear(), growth.clear()
        for i in range(args.rounds):
            for step in ((pull, curl) if i % 2 == 0 else (curl, pull)):
                step()
    mb = blob.size / 1e6
    ratios = [c / o for o, c in zip(ours, curls)]
    print(f"{args.rounds} rounds; blob {mb:.0f} MB; our pull includes the manifest, 5 small blobs, "
          "sha256 verification and the manifest write")
    print(f"our pull MB/s:  {', '.join(f'{mb / t:.0f}' for t in ours)}")
    print(f"curl MB/s:      {', '.join(f'{mb / t:.0f}' for t in curls)}")
    print(f"ratio (ours/curl) per round: {', '.join(f'{r:.2f}' for r in ratios)}; median "
          f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); target >= 0.9")
    print(f"RSS growth while pulling (MB): {', '.join(f'{g:.1f}' for g in growth)}; max {max(growth):.1f} "
          f"vs a {mb:.0f} MB blob; target: flat")


if __name__ == "__main__":
    main()
