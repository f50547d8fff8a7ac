"""Worker processes (common.workers): a call that configures a worker (Engine.set_threads) is made again in the
worker that replaces it, which must report what the first did; close_all forgets it."""
from types import SimpleNamespace

import pytest

from alexnet_parity.common import workers

ENV = {"ALEXNET_TEST_WORKER": "settings"}
JOB = SimpleNamespace(name="", env=ENV)  # configure() needs an engine's name and env; ":" methods need no engine


@pytest.fixture(autouse=True)
def _fresh():
    workers.close_all()
    yield
    workers.close_all()


def test_a_setting_is_made_again_in_the_worker_that_replaces_one():
    assert workers.configure(JOB, "tests._worker_jobs:set_value", 3) == 3
    first = workers.run(ENV, "os:getpid")
    workers.run(ENV, "tests._worker_jobs:set_value", 4)  # a plain call is not kept
    workers.worker(ENV).close()  # as Worker.call closes one past RSS_LIMIT
    assert workers.run(ENV, "os:getpid") != first
    assert workers.run(ENV, "tests._worker_jobs:value") == 3


def test_a_replacement_that_reports_another_setting_stops():
    pid = workers.configure(JOB, "tests._worker_jobs:set_pid")
    workers.worker(ENV).close()
    with pytest.raises(RuntimeError, match=rf"replacement worker .* returned \d+ from tests._worker_jobs:set_pid, "
                                           rf"the first one {pid}"):
        workers.run(ENV, "os:getpid")


def test_close_all_forgets_the_settings():
    workers.configure(JOB, "tests._worker_jobs:set_value", 3)
    workers.close_all()
    assert workers.run(ENV, "tests._worker_jobs:value") is None
