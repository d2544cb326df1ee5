"""Fixtures of the fuzz suite: one crash-proof worker per test module, warmed up on the module's clean corpus."""

import pytest

from .harness import Worker


@pytest.fixture(scope="module")
def worker(request):
    """A `Worker` warmed up with the module's `WARM_UP` cases (clean loads that import and build everything)."""
    w = Worker(getattr(request.module, "WARM_UP", []))
    yield w
    w.close()
