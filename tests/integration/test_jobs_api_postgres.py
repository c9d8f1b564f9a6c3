"""The tests of test_jobs_api.py that exercise the store, again with the jobs store on PostgreSQL (a file of its own,
so that the two run side by side on two test workers)."""

from __future__ import annotations

import pytest

from tests.integration.test_jobs_api import *  # noqa: F403  (the tests, and the fixtures they use)
from tests.integration.test_jobs_api import use_store


@pytest.fixture(scope="module")
def store_kind(request):
    yield from use_store("postgres", request)


# On PostgreSQL, what the store does differently: a job from upload to model (events, checkpoints, result files), the
# tuned model found, a checkpoint answered and a deleted model, lists paged by `after`, pause, resume and cancel
# (compare-and-set moves), a refused request that creates nothing. What does not touch the store differently
# (validation messages, uploads on disk, the key, response shapes, the guide's script, DPO) is test_jobs_api.py's
# alone; a worker killed mid-job and its job taken over by another is test_workers.py's (with a lease, as workers
# sharing PostgreSQL run).
for _name in (
    "test_a_worker_killed_mid_job_is_resumed_by_the_next_to_the_same_adapter",
    "test_every_object_carries_the_fields_openai_marks_required",
    "test_uploads_are_stored_by_id_never_by_their_name",
    "test_a_bad_upload_is_refused_and_stores_nothing",
    "test_a_bad_training_file_fails_the_job_naming_line_and_code",
    "test_a_bad_tool_call_fails_the_job_naming_line_and_code",
    "test_every_jobs_route_needs_the_key",
    "test_the_migration_guides_script_runs_unchanged_against_the_server",
    "test_a_file_of_another_purpose_cannot_train_a_job",
    "test_a_dpo_job_on_openai_preference_pairs_trains_with_beta_and_reports_rewards",
):
    del globals()[_name]
