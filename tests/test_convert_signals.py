"""Property test: SIGTERM or SIGKILL at a random moment of `alexnet convert` over an existing checkpoint.

Afterwards the destination is the old file or the new one, byte for byte, never a mix; after SIGTERM no
temporary is left (the CLI turns it into an exception, so atomic_output's cleanup runs); after SIGKILL the
only thing that may be left is the killed writer's temporary (.NAME.<pid>-<hex>.tmp), and the next convert
to the same destination removes it. Half the kills land at a uniform moment of the whole run (import,
read, write), half just after the temporary appears (the write itself). 6 runs in CI, 30 with --slow.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.common import get_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = get_spec("torchvision", input_size=64, include_top=False)
TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{12}\.tmp")
CI_RUNS, ALL_RUNS = 6, 30


def _weights(seed):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in SPEC.weight_shapes().items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    wc.save(root / "src.safetensors", SPEC, _weights(0))
    wc.save(root / "new.caffemodel", SPEC, _weights(0))  # what the convert writes
    wc.save(root / "old.caffemodel", SPEC, _weights(1))  # what the destination holds before
    return root


def _convert(src, dst):
    return subprocess.Popen([sys.executable, "-m", "alexnet_parity.alexnet_cli", "convert", str(src), str(dst), "-q"],
                            env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _one_run(files, work, seed: int) -> str:
    rng = random.Random(seed)
    sig = signal.SIGTERM if seed % 2 == 0 else signal.SIGKILL
    old, new = (files / "old.caffemodel").read_bytes(), (files / "new.caffemodel").read_bytes()
    dst = work / "out.caffemodel"
    shutil.copy(files / "old.caffemodel", dst)
    proc = _convert(files / "src.safetensors", dst)
    if seed % 4 < 2:  # a uniform moment of the whole run (a full run takes about 2 s here)
        time.sleep(rng.uniform(0, 2.5))
    else:  # just after the temporary appears: during the write
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not any(
                TEMP.match(n) for n in os.listdir(work)):
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.02))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err[-2000:]
    assert dst.read_bytes() in (old, new), f"partial destination after {sig.name} (exit {proc.returncode})"
    # a new caffemodel may be followed by its deploy net, NAME.prototxt, written after it
    companion = dst.with_suffix(".prototxt").name if dst.suffix == ".caffemodel" and dst.read_bytes() == new else None
    left = sorted(n for n in os.listdir(work) if n not in (dst.name, companion))
    if sig == signal.SIGTERM:
        assert left == [], f"SIGTERM left {left} (exit {proc.returncode}: {err[-300:]})"
    else:
        assert all(TEMP.match(n) and TEMP.match(n).group("pid") == str(proc.pid) for n in left), left
        if left:  # the next write to the same destination removes the dead writer's temporary
            again = _convert(files / "src.safetensors", dst)
            assert again.wait(timeout=120) == 0, again.stderr.read()
            assert sorted(os.listdir(work)) == [dst.name, dst.with_suffix(".prototxt").name] and dst.read_bytes() == new
    return "new" if dst.read_bytes() == new else "old"


def _runs(files, tmp_path, seeds):
    outcomes = []
    for seed in seeds:
        work = tmp_path / f"run{seed}"
        work.mkdir()
        outcomes.append(_one_run(files, work, seed))
    return outcomes


def test_signals_mid_convert_leave_old_or_new(files, tmp_path):
    _runs(files, tmp_path, range(CI_RUNS))


@pytest.mark.slow
def test_signals_mid_convert_leave_old_or_new_many(files, tmp_path):
    outcomes = _runs(files, tmp_path, range(CI_RUNS, ALL_RUNS))
    assert "old" in outcomes, "no kill landed before the rename: the property was not exercised"
