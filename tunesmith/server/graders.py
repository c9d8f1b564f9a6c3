"""OpenAI's graders routes (`client.fine_tuning.alpha.graders.run/validate`): a grader checked, or run on one
model sample and its item, with OpenAI's response shapes. Model graders ask the endpoint of
$TUNESMITH_GRADER_BASE_URL (this server itself, when it points here); grading runs off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from tunesmith.graders.run import Runner
from tunesmith.graders.spec import GraderError, as_json, read_grader
from tunesmith.graders.template import Sample
from tunesmith.server.errors import APIError


class RunRequest(BaseModel):
    """The body of POST /v1/fine_tuning/alpha/graders/run."""

    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]
    """The grader object."""
    model_sample: str
    """The answer graded: `sample.output_text` (and `sample.output_json` when it is JSON)."""
    item: Any = None
    """The data set item: the `item` namespace."""


class ValidateRequest(BaseModel):
    """The body of POST /v1/fine_tuning/alpha/graders/validate."""

    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]
    """The grader object."""


def checked(value: dict[str, Any]) -> Any:
    """The grader, or a 400 naming the field at fault."""
    try:
        return read_grader(value)
    except GraderError as exc:
        field = exc.message.split(":", 1)[0]
        raise APIError(400, exc.message, field, "invalid_grader") from None


def run_grader(grader: Any, sample: str, item: Any) -> dict[str, Any]:
    """One grade in OpenAI's run response shape."""
    runner = Runner(grader)
    try:
        grade = runner.grade(Sample(sample), item)
    finally:
        runner.close()
    usage = runner.usage.as_dict()
    return {
        "reward": grade.score,
        "metadata": {
            "name": grader.name,
            "type": grader.type,
            "errors": grade.metadata_errors(),
            "execution_time": grade.seconds,
            "scores": dict(grade.sub_scores),
            "token_usage": sum(u.get("total_tokens", 0) for u in usage.values()) if usage else None,
            "sampled_model_name": None,
        },
        "sub_rewards": dict(grade.sub_scores),
        "model_grader_token_usage_per_model": usage,
    }


class GradersAPI:
    """The two routes."""

    def router(self) -> APIRouter:
        router = APIRouter()
        base = "/v1/fine_tuning/alpha/graders"
        router.add_api_route(base + "/run", self.run, methods=["POST"])
        router.add_api_route(base + "/validate", self.validate, methods=["POST"])
        return router

    async def run(self, body: RunRequest) -> dict[str, Any]:
        grader = checked(body.grader)
        return await asyncio.to_thread(run_grader, grader, body.model_sample, body.item)

    def validate(self, body: ValidateRequest) -> dict[str, Any]:
        return {"grader": as_json(checked(body.grader))}
