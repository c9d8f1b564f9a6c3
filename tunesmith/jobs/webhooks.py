"""Webhooks: a job's end posted to the endpoints that asked for it, signed as OpenAI signs them (Standard Webhooks:
webhook-id, webhook-timestamp, and webhook-signature "v1,<base64 HMAC-SHA256 of id.timestamp.body>" keyed by the
endpoint's whsec_ secret), so the official client's `client.webhooks.unwrap(...)` verifies them.

The store owes an event to each endpoint in the same transaction that ends the job; a thread of the worker posts
what is due and keeps at it with growing pauses until the endpoint answers 2xx (at least once: a receiver drops
repeats by webhook-id) or RETRY_FOR seconds have passed. A job never waits for an endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
import urllib.error
import urllib.request

from tunesmith.jobs.records import DeliveryRecord, EndpointRecord
from tunesmith.jobs.store import Store

log = logging.getLogger(__name__)

TIMEOUT = 10.0
"""Seconds an endpoint has to answer one attempt."""
RETRY_FOR = 72 * 3600
"""Seconds after the event during which a failing endpoint is retried (OpenAI's 72 hours)."""
LONGEST_PAUSE = 8 * 3600
"""The longest wait between two attempts."""


def first_pause() -> float:
    """Seconds before the first retry, doubling after each (TUNESMITH_WEBHOOK_RETRY_SECONDS, default 5)."""
    return float(os.environ.get("TUNESMITH_WEBHOOK_RETRY_SECONDS", "5"))


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, event_id: str, timestamp: int, body: str) -> str:
    """The webhook-signature header of one attempt."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{event_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def post(url: str, secret: str, event_id: str, body: str) -> int:
    """One signed POST of an event; the endpoint's HTTP status (a refused connection raises OSError)."""
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "tunesmith-webhooks",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, event_id, timestamp, body),
    }
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


TAKEN_FOR = 120.0
"""Seconds a worker holds a due delivery while it posts it: no other worker sends it meanwhile, and one that died
holding it leaves it due again after this."""


def _attempt(store: Store, delivery: DeliveryRecord, endpoint: EndpointRecord) -> None:
    try:
        status = post(endpoint.url, endpoint.secret, delivery.event_id, delivery.body)
        error = None if 200 <= status < 300 else f"HTTP {status}"
    except (OSError, ValueError) as exc:  # refused, timed out, or a URL urllib cannot send to
        error = f"{type(exc).__name__}: {exc}"
    now = time.time()
    if error is None:
        store.attempted(delivery.id, "delivered", now, None)
        return
    pause = min(LONGEST_PAUSE, first_pause() * 2**delivery.attempts)
    gives_up = now + pause > delivery.created_at + RETRY_FOR
    store.attempted(delivery.id, "failed" if gives_up else "pending", now + pause, error[:500])
    log.warning("webhook %s to %s: %s%s", delivery.event_id, endpoint.url, error, " (giving up)" if gives_up else "")


def deliver_due(store: Store) -> int:
    """Make every attempt that is due now; how many were made."""
    due = store.due_deliveries(time.time())
    made = 0
    for delivery, endpoint in due:
        if store.take_delivery(delivery.id, time.time() + TAKEN_FOR):  # another worker may have taken it first
            _attempt(store, delivery, endpoint)
            made += 1
    return made
