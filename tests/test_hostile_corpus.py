"""The CI-sized part of benchmarks/hostile_corpus.py (the numpy and torch readers: FIFOs, devices, links,
absurd sizes, deep nesting, quadratic prototxts, mutations): no traceback, no hang, nothing written outside
the destination, every input refused with one line. The whole corpus (every reader, ~460 inputs) is
`python benchmarks/hostile_corpus.py`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_hostile_corpus(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "hostile_corpus.py"), "--quick",
                          "--keep", str(tmp_path / "corpus"), "--json", str(tmp_path / "results.json")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
    summary = json.loads(run.stdout[run.stdout.index("{"):])
    assert run.returncode == 0, summary
    assert summary["inputs"] >= 50 and summary["tracebacks"] == 0 and summary["hangs_over_30s"] == 0
    assert summary["wrote_outside_destination"] == 0 and summary["peak_rss_mb_any_worker"] < 2500, summary
    results = json.load(open(tmp_path / "results.json"))
    unclear = [r["id"] for r in results if r["code"] not in (0, 2) or (r["code"] == 2 and not r["error"])]
    assert not unclear, unclear
