"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault(
    "GEMINI_EMBED_DATA",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")),
)

import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # shared test helpers (real_texts)

import ctypes
import gc

import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_memory_after_each_module():
    """When a test module ends, its compiled programs (jax's caches), garbage and freed heap pages
    go back, so the modules after it do not stack on its peak (the suite's memory bound)."""
    yield
    import jax

    jax.clear_caches()
    gc.collect()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


_MEMORY_LOG = os.environ.get("GEMINI_EMBED_TEST_MEMORY_LOG")


if _MEMORY_LOG:
    import resource
    import time

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        """Opt-in per-test memory log (what finds the suite's heaviest tests): seconds, this process's
        RSS after the test, and the peak RSS so far of this process and of its largest child."""
        start = time.perf_counter()
        yield
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with open(_MEMORY_LOG, "a") as f:
            f.write(f"{item.nodeid}\t{time.perf_counter() - start:.1f}\t{rss // 1024}\t{own // 1024}\t"
                    f"{child // 1024}\n")
