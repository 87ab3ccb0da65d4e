"""crf.heap: freed memory kept for the next image, and the user's malloc settings respected."""
import json
import os
import subprocess
import sys

import pytest

from crf import heap

# In a fresh process: import crf, then allocate and free the same arrays four times, counting the
# page faults of each round (the first maps the memory; the others find it in the heap or not).
_ROUNDS = """
import json, resource
import numpy as np
import crf
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds = []
for _ in range(4):
    f0 = faults()
    a, b = np.ones(5_000_000, np.float32), np.ones(2_000_000, np.float32)
    rounds.append(faults() - f0)
    del a, b
print(json.dumps({"status": crf.heap.status, "faults": rounds}))
"""


def _rounds(**env):
    environ = {k: v for k, v in os.environ.items() if k not in heap._USER_SETTINGS and k != "GLIBC_TUNABLES"}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", _ROUNDS], env=environ, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


glibc_only = pytest.mark.skipif(not heap._glibc(), reason="the heap thresholds are glibc's")


@glibc_only
def test_freed_arrays_are_reused_without_page_faults_unless_the_user_set_malloc():
    kept = _rounds()
    # The same rounds with glibc's own trim threshold, set by the user: import crf leaves it
    # alone, and every round faults new pages in again (what crf.heap saves).
    default = _rounds(MALLOC_TRIM_THRESHOLD_="131072")
    assert kept["status"].startswith("mmap threshold 32 MB")
    assert default["status"] == "left to the environment (MALLOC_TRIM_THRESHOLD_)"
    # 28 MB a round: about 7,000 faults of 4 KB pages, or a few dozen where the kernel maps huge pages
    assert min(default["faults"][1:]) > 0, default
    assert max(kept["faults"][1:]) * 10 <= min(default["faults"][1:]), (kept, default)


def test_user_settings_names_every_malloc_variable():
    assert heap.user_settings({}) == []
    assert heap.user_settings({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.rtld.nns=2"}) == []
    assert heap.user_settings({"MALLOC_MMAP_THRESHOLD_": "1", "MALLOC_TOP_PAD_": "0"}) == \
        ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"]
    assert heap.user_settings({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}) == ["GLIBC_TUNABLES"]


def test_a_user_setting_means_no_mallopt_call(monkeypatch):
    def refuse(*args):
        raise AssertionError("mallopt must not be called when the user set malloc's thresholds")
    monkeypatch.setattr(heap.ctypes, "CDLL", refuse)
    monkeypatch.setattr(heap, "status", None)
    assert heap.keep_freed_memory({"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_MAX_": "0"}) == \
        "left to the environment (MALLOC_MMAP_MAX_)"
    assert heap.status == "left to the environment (MALLOC_MMAP_MAX_)"


def test_another_c_library_is_left_alone(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: False)
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda *a: pytest.fail("no libc call off glibc"))
    monkeypatch.setattr(heap, "status", None)
    assert heap.keep_freed_memory({}) == "not glibc: unchanged"
    assert heap.release() is False
