"""Jobs tests/test_workers.py runs in a worker process (common.workers.run): a setting that lives in the process."""
import os

_value = None


def set_value(v):
    global _value
    _value = v
    return v


def value():
    return _value


def set_pid():
    """A setting whose result differs in every process: what a replacement worker must not get away with."""
    return os.getpid()
