"""Every test of test_jobs_api.py again, with the jobs store on PostgreSQL (a file of its own, so that the two run
side by side on two test workers)."""

from __future__ import annotations

import pytest

from tests.integration.test_jobs_api import *  # noqa: F403  (the tests, and the fixtures they use)
from tests.integration.test_jobs_api import use_store


@pytest.fixture(scope="module")
def store_kind(request):
    yield from use_store("postgres", request)
