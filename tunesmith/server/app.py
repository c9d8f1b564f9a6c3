"""The one FastAPI app: the inference routes, the jobs routes and the dashboard, behind one gate (keys, projects,
roles, limits: access.py), one body limit and one kind of error object."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import ConfigError
from tunesmith.jobs.store import Store
from tunesmith.serve.batcher import Batcher
from tunesmith.serve.loaded import ModelSet, default_base, load_models
from tunesmith.server.access import Denied, Gate, denied_response
from tunesmith.server.dashboard.pages import Dashboard
from tunesmith.server.errors import BodyLimit, install_error_handlers
from tunesmith.server.graders import GradersAPI
from tunesmith.server.inference import inference_router
from tunesmith.server.jobs import JobsAPI
from tunesmith.server.tuned import JobModels
from tunesmith.server.webhooks import WebhooksAPI

UPLOAD_OVERHEAD = 64 * 1024
"""Room for the multipart envelope around an upload of the largest file size."""
UPLOAD_PATH = "/v1/files"


@dataclass(frozen=True)
class ServerSettings:
    """What `tunesmith serve` is asked for."""

    model: str | None = None
    """The base model; None: the first adapter's base, else the default model."""
    adapters: tuple[str, ...] = ()
    """LoRA or DoRA run folders served on the base."""
    api_key: str | None = None
    """Required on every route when set; never empty."""
    dtype: str = "auto"
    """auto, float32 or bfloat16."""
    max_batch: int = 8
    """The most answers generated together."""
    max_waiting: int = 64
    """Requests that may wait for room; more get 429."""
    max_upload_mb: int = 512
    """Largest file upload, in MB."""
    requests_per_minute: int | None = None
    """Requests a key may make per minute (a key's own limit, set with `keys create`, wins); None: no limit."""
    jobs_per_project: int | None = None
    """Jobs a project may have not yet ended at once; more are refused with 429. None: no limit."""

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError(
                "the API key is empty, which would leave the server open",
                hint="pass a non-empty --api-key (or TUNESMITH_API_KEY), or none to serve without a key",
            )


@dataclass
class Server:
    """The app and what it serves."""

    app: FastAPI
    models: ModelSet


def build_server(settings: ServerSettings, store: Store | None = None) -> Server:
    """Load the models and assemble the app on the jobs store (default: the one of TUNESMITH_HOME)."""
    store = store or Store()
    adapters = list(settings.adapters)
    base = settings.model or default_base(adapters)
    models = load_models(base, adapters, dtype=settings.dtype, tuned=JobModels(store))
    batcher = Batcher(models, settings.max_batch, settings.max_waiting)
    limit = settings.max_upload_mb * 1024 * 1024
    gate = Gate(settings.api_key, store, settings.requests_per_minute)
    app = FastAPI(
        title="tunesmith", docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(gate.check)]
    )
    app.add_middleware(gate.middleware)
    app.add_middleware(BodyLimit, larger={UPLOAD_PATH: limit + UPLOAD_OVERHEAD})
    install_error_handlers(app)
    app.add_exception_handler(Denied, denied_response)
    app.add_exception_handler(StarletteHTTPException, gate.unrouted)
    app.include_router(JobsAPI(store, limit, settings.jobs_per_project).router())
    app.include_router(WebhooksAPI(store).router())
    app.include_router(GradersAPI().router())
    app.include_router(Dashboard(store, settings.api_key, models.base).router())
    app.include_router(inference_router(models, batcher))
    return Server(app, models)
