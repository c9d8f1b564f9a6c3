"""Every test of test_jobs_api.py again (but the killed worker, below), with the jobs store on PostgreSQL (a file of
its own, so that the two run side by side on two test workers)."""

from __future__ import annotations

import pytest

from tests.integration.test_jobs_api import *  # noqa: F403  (the tests, and the fixtures they use)
from tests.integration.test_jobs_api import use_store


@pytest.fixture(scope="module")
def store_kind(request):
    yield from use_store("postgres", request)


# a worker killed mid-job on PostgreSQL, its job taken over by another, is test_workers.py's (with a lease, as
# workers sharing PostgreSQL run); this file's copy of the single-worker version would only repeat it
del test_a_worker_killed_mid_job_is_resumed_by_the_next_to_the_same_adapter  # noqa: F821
