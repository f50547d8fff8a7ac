"""The parity sweep (issue 15, item 4): its drawing is reproducible and in range, every thread count really is the
count the engines run on, workers are replaced and a config whose worker dies runs again (and is reported),
and (slow) 200 drawn configs pass the forward tolerance in every engine."""
import sys
import threading
import time

import pytest

from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import VARIANTS, get_spec
from alexnet_parity.common.engines import compared, get_engine
from alexnet_parity.common.spec import smallest_input_size
from alexnet_parity.parity_tests import sweep


def test_draw_is_reproducible_from_its_seed_and_every_field_in_range():
    configs = sweep.draw(60, seed=7)
    assert configs == sweep.draw(60, seed=7)
    assert configs[:25] == sweep.draw(25, seed=7)  # config i is the same in any longer sweep
    assert configs != sweep.draw(60, seed=8)
    for i, c in enumerate(configs):
        assert c.index == i and c.variant in VARIANTS
        assert smallest_input_size(c.variant) <= c.input_size <= VARIANTS[c.variant].input_size + 32
        assert get_spec(c.variant, input_size=c.input_size).input_size == c.input_size
        assert 1 <= c.batch <= 8 and 0 <= c.seed < 2**31 and c.threads in (1, 2)
    # 60 draws reach every thread count, most variants and both ends of the batch range
    assert {c.threads for c in configs} == {1, 2}
    assert len({c.variant for c in configs}) >= 5 and {1, 8} <= {c.batch for c in configs}
    assert {c.variant for c in sweep.draw(20, seed=1, variants=("caffe",))} == {"caffe"}


def test_busy_threads_counts_the_threads_that_did_the_work():
    release = threading.Event()

    def spin(seconds=0.3):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def on_threads(k):
        """Spin on k threads that stay alive until measured (a finished thread leaves no CPU time to read)."""
        spun = [threading.Event() for _ in range(k)]
        workers = [threading.Thread(target=lambda e=e: (spin(), e.set(), release.wait())) for e in spun]
        for w in workers:
            w.start()
        for e in spun:
            e.wait()
        return workers

    assert sweep.busy_threads(spin)[0] == 1
    workers = []
    try:
        for k in (1, 2):
            busy, cpu = sweep.busy_threads(lambda: workers.extend(on_threads(k)))
            assert busy == k and cpu >= 0.25 * k
    finally:
        release.set()
        for w in workers:
            w.join()


@pytest.mark.parametrize("threads", sweep.THREADS)
def test_a_worker_runs_torch_and_the_reference_on_its_thread_count(threads):
    """A worker sets the count in the framework (which reports it back) and no more threads than that do the
    probe's work. torch and the reference keep this cheap (about 4 s); the slow sweep checks every engine."""
    pytest.importorskip("torch")
    worker = sweep._Worker(threads, ("torch",))
    try:
        assert worker.fatal is None, worker.fatal
        for name in ("torch", "reference"):
            probe = worker.engines[name]
            assert probe["reported"] == threads, (name, probe)
            assert 1 <= probe["busy"] <= threads and probe["cpu_s"] > 0.1, (name, probe)
    finally:
        worker.close()


# three small torchvision configs (154 batch 5, 69 batch 2, 111 batch 3; threads 2, 2, 1) through the reference alone:
# the worker machinery without any framework's start-up
SMALL = dict(n=3, seed=1, frameworks=(), variants=("torchvision",))


def test_a_worker_is_replaced_after_restart_every_configs():
    report = sweep.sweep(**SMALL, restart_every=1)
    assert sorted(report.results) == [0, 1, 2] and not report.failures() and not report.retried
    assert [w["configs"] for w in report.workers] == [[0], [1], [2]]
    assert len({w["pid"] for w in report.workers}) == 3  # three processes, one per config
    assert [w["threads"] for w in report.workers] == [c.threads for c in sweep.draw(3, 1, ("torchvision",))]
    assert all(w["peak_rss"] >= w["rss"] > 0 for w in report.workers)
    assert report.peak_rss() == max(w["peak_rss"] for w in report.workers)


def test_a_worker_is_replaced_once_its_memory_passes_the_bound():
    report = sweep.sweep(**SMALL, rss_limit=1)  # every worker is over 1 byte after its first config
    assert [w["configs"] for w in report.workers] == [[0], [1], [2]] and not report.failures()


# A worker that SIGKILLs itself when it is given config #1 (the seed it draws), always or only the first time
# (a marker file): the kernel's OOM killer, as the 159/200 sweep met it.
DIES_AT = """
import os, signal, sys
from alexnet_parity.parity_tests import sweep
seed, marker = int(sys.argv[1]), sys.argv[2]
run_parity = sweep.run_parity
def dying(variant, overrides, **kw):
    if kw["seed"] == seed and not os.path.exists(marker):
        if marker != "always":
            open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return run_parity(variant, overrides, **kw)
sweep.run_parity = dying
sweep._worker_main()
"""


@pytest.mark.parametrize("again", ["survives", "dies"])
def test_a_config_whose_worker_dies_runs_again_in_a_fresh_worker_and_is_reported(monkeypatch, tmp_path, again):
    doomed = sweep.draw(3, 1, ("torchvision",))[1]
    marker = "always" if again == "dies" else str(tmp_path / "died-once")
    monkeypatch.setattr(sweep, "worker_command", lambda: [sys.executable, "-c", DIES_AT, str(doomed.seed), marker])
    report = sweep.sweep(**SMALL)
    assert list(report.retried) == [1] and "exited with status -9" in report.retried[1], report.retried
    assert [w["configs"] for w in report.workers if w["threads"] == doomed.threads][:2] == [[0, 1], [1]]
    listed = {c["index"]: c for c in report.to_dict()["configs"]}
    assert "exited with status -9" in listed[1]["retried"]
    if again == "survives":
        assert sorted(report.results) == [0, 1, 2] and not report.failures()
    else:
        assert sorted(report.results) == [0, 2] and "retry" in report.errors[1]
        assert report.failures() == [f"{doomed.id}: {report.errors[1]}"]
        assert "exited with status -9" in listed[1]["error"]


def test_the_command_names_a_retried_config_in_its_output_and_json(monkeypatch, tmp_path, capsys):
    import json
    doomed = sweep.draw(3, 1, ("torchvision",))[1]
    monkeypatch.setattr(sweep, "worker_command",
                        lambda: [sys.executable, "-c", DIES_AT, str(doomed.seed), str(tmp_path / "died-once")])
    out = tmp_path / "sweep.json"
    assert main(["parity", "torchvision", "--sweep", "3", "--seed", "1", "--frameworks", "reference",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"retried in a fresh worker: {doomed.id}: " in printed and "(passed on the retry)" in printed
    assert "workers: 3 started" in printed  # the first threads=2 one, its replacement, the threads=1 one
    report = json.loads(out.read_text())
    assert list(report["retried"]) == ["1"] and not report["failures"] and len(report["workers"]) == 3


def test_sweep_options_that_do_not_go_together_are_one_line_errors(capsys):
    for argv in (["--sweep", "0"], ["--sweep", "3", "--convert"], ["--sweep", "3", "--batch", "4"],
                 ["--sweep", "3", "--device", "gpu"], ["--sweep", "3", "nonet"]):
        assert main(["parity", *argv, "--frameworks", "reference"]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err, (argv, err)


def installed() -> tuple[str, ...]:
    return tuple(name for name, engine in compared().items() if engine.available())


@pytest.mark.slow
def test_two_hundred_drawn_configs_pass_in_every_engine():
    frameworks = installed()
    if not frameworks:
        pytest.skip("no engine installed")
    report = sweep.sweep(200, seed=0, frameworks=frameworks)
    assert len(report.results) == 200, report.errors
    assert set(report.threads) == set(sweep.THREADS)
    assert all(set(p) == {*frameworks, "reference"} for p in report.threads.values())
    assert not report.failures(), "\n".join(report.failures()[:20])
    assert all(get_engine(name).threads for name in frameworks)
