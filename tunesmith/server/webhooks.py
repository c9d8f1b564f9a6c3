"""OpenAI's webhook endpoints routes (`client.webhooks.create/list/retrieve/update/delete/rotate_secret/test`):
where a job's end is posted. The worker posts the events (jobs/webhooks.py); these routes only keep the
endpoints, except `test`, which posts one sample event now and says what the endpoint answered."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunesmith.jobs.records import WEBHOOK_EVENTS, EndpointRecord, new_id
from tunesmith.jobs.store import Store
from tunesmith.jobs.webhooks import new_secret, post
from tunesmith.server.access import audit, scoped
from tunesmith.server.errors import APIError
from tunesmith.server.jobs import Limit, listing, paged

EventType = Literal["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("url must be an http:// or https:// URL")
    return url


class EndpointRequest(BaseModel):
    """The body of POST /v1/webhook_endpoints."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    """The user's name for the endpoint."""
    url: str = Field(min_length=1, max_length=2048)
    """Where events are posted (https, or http for a receiver on a private network)."""
    event_types: list[EventType] = Field(min_length=1)
    """Which job ends it receives."""

    _url = field_validator("url")(_checked_url)


class EndpointUpdate(BaseModel):
    """The body of POST /v1/webhook_endpoints/{id}: what changes."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=256)
    """A new name."""
    url: str | None = Field(None, min_length=1, max_length=2048)
    """A new URL."""
    event_types: list[EventType] | None = Field(None, min_length=1)
    """The complete new set of event types."""

    _url = field_validator("url")(lambda url: url if url is None else _checked_url(url))


class TestRequest(BaseModel):
    """The body of POST /v1/webhook_endpoints/{id}/test."""

    event_type: str
    """The event type of the sample delivery."""


class WebhooksAPI:
    """The routes and the store they keep endpoints in."""

    def __init__(self, store: Store) -> None:
        self.root = store

    @property
    def store(self) -> Store:
        """The store as this request's key sees it: its project's endpoints."""
        return scoped(self.root)

    def router(self) -> APIRouter:
        router = APIRouter()
        base = "/v1/webhook_endpoints"
        router.add_api_route(base, self.create, methods=["POST"])
        router.add_api_route(base, self.list, methods=["GET"])
        router.add_api_route(base + "/{endpoint_id}", self.retrieve, methods=["GET"])
        router.add_api_route(base + "/{endpoint_id}", self.update, methods=["POST"])
        router.add_api_route(base + "/{endpoint_id}", self.delete, methods=["DELETE"])
        router.add_api_route(base + "/{endpoint_id}/rotate_secret", self.rotate_secret, methods=["POST"])
        router.add_api_route(base + "/{endpoint_id}/test", self.test, methods=["POST"])
        return router

    def _endpoint(self, endpoint_id: str) -> EndpointRecord:
        record = self.store.endpoint(endpoint_id)
        if record is None:
            raise APIError(404, f"No such webhook endpoint: {endpoint_id}", "webhook_endpoint_id", "not_found")
        return record

    def create(self, body: EndpointRequest) -> dict[str, Any]:
        now = int(time.time())
        record = EndpointRecord(new_id("we_"), body.name, body.url, list(body.event_types), new_secret(), now, now)
        self.store.add_endpoint(record)
        audit(self.root, "webhook.create", record.id, record.url)
        return record.as_object(with_secret=True)

    def list(self, after: str | None = None, limit: Limit = 20) -> dict[str, Any]:
        page = paged(self.store.endpoints, after, limit)
        return listing(page, [e.as_object() for e in page.items])

    def retrieve(self, endpoint_id: str) -> dict[str, Any]:
        return self._endpoint(endpoint_id).as_object()

    def update(self, endpoint_id: str, body: EndpointUpdate) -> dict[str, Any]:
        self._endpoint(endpoint_id)
        changes = body.model_dump(exclude_none=True)
        if changes:
            self.store.update_endpoint(endpoint_id, changes)
            audit(self.root, "webhook.update", endpoint_id, ", ".join(changes))
        return self._endpoint(endpoint_id).as_object()

    def delete(self, endpoint_id: str) -> dict[str, Any]:
        self._endpoint(endpoint_id)
        self.store.delete_endpoint(endpoint_id)
        audit(self.root, "webhook.delete", endpoint_id)
        return {"id": endpoint_id, "object": "webhook_endpoint.deleted", "deleted": True}

    def rotate_secret(self, endpoint_id: str) -> dict[str, Any]:
        self._endpoint(endpoint_id)
        self.store.update_endpoint(endpoint_id, {"secret": new_secret()})
        return self._endpoint(endpoint_id).as_object(with_secret=True)

    async def test(self, endpoint_id: str, body: TestRequest) -> dict[str, Any]:
        """A sample event of the type asked for, posted now (off the event loop); the endpoint's HTTP status."""
        endpoint = self._endpoint(endpoint_id)
        if body.event_type not in WEBHOOK_EVENTS:
            message = f"event_type {body.event_type!r}: this server sends {', '.join(WEBHOOK_EVENTS)}"
            raise APIError(400, message, "event_type", "invalid_value")
        event_id = new_id("evt_")
        event = {"id": event_id, "object": "event", "type": body.event_type, "created_at": int(time.time())}
        text = json.dumps(event | {"data": {"id": "ftjob-test"}})
        try:
            status = await asyncio.to_thread(post, endpoint.url, endpoint.secret, event_id, text)
        except OSError as exc:
            raise APIError(502, f"the endpoint did not answer: {exc}", "url", "endpoint_unreachable") from None
        return {
            "object": "webhook_endpoint.test",
            "webhook_endpoint_id": endpoint_id,
            "event_type": body.event_type,
            "status_code": status,
            "success": True,
        }
