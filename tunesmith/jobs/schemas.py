"""The body of POST /v1/fine_tuning/jobs in OpenAI's shape, validated: a bad value is a 400 naming its field."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Auto = Literal["auto"]
MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]


class Hyperparameters(BaseModel):
    """OpenAI's hyperparameters, each "auto" or a value (see docs/from-openai.md for what they mean here)."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    """Passes over the training data."""
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    """Examples per optimizer step, about (tokens are what is batched here)."""
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=10)] | Auto = "auto"
    """Times tunesmith's automatic learning rate for the method and model (docs/from-openai.md)."""
    finetuning_type: Literal["lora", "dora", "full"] | Auto = "auto"
    """tunesmith's own: which weights are trained (an adapter, or every weight); auto is lora."""
    lora_rank: Annotated[int, Field(ge=1, le=1024)] | Auto = "auto"
    """tunesmith's own: the rank of a LoRA or DoRA adapter; auto is the training default."""


class SupervisedMethod(BaseModel):
    """OpenAI's method.supervised: the hyperparameters of supervised fine-tuning."""

    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Hyperparameters()
    """As the top-level hyperparameters."""


class DpoHyperparameters(Hyperparameters):
    """The supervised ones and DPO's beta."""

    beta: Annotated[float, Field(gt=0, le=100)] | Auto = "auto"
    """How far the tuned model may move from its reference (the base): higher keeps it closer; auto is 0.1."""


class DpoMethod(BaseModel):
    """OpenAI's method.dpo: the hyperparameters of preference tuning."""

    model_config = ConfigDict(extra="forbid")

    hyperparameters: DpoHyperparameters = DpoHyperparameters()
    """As the supervised ones, with beta."""


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["supervised", "dpo", "reinforcement"]
    """supervised trains on answers; dpo on preference pairs; reinforcement is not available."""
    supervised: SupervisedMethod | None = None
    """Its hyperparameters, for type supervised."""
    dpo: DpoMethod | None = None
    """Its hyperparameters, for type dpo."""

    @model_validator(mode="after")
    def _own_place(self) -> Method:
        for other in ("supervised", "dpo"):
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"method {self.type} takes its hyperparameters in method.{self.type}, not {other}")
        return self

    def inner(self) -> SupervisedMethod | DpoMethod | None:
        """The hyperparameters' holder for this method's type."""
        return self.supervised if self.type == "supervised" else self.dpo


class WandbIntegration(BaseModel):
    """OpenAI's wandb integration settings."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=256)
    """The W&B project the run is logged to."""
    name: str | None = Field(None, max_length=256)
    """The run's display name (default: the job id)."""
    entity: str | None = Field(None, max_length=256)
    """The W&B team or user (default: the API key's)."""
    tags: list[str] = Field(default_factory=list, max_length=50)
    """Tags of the run."""


class Integration(BaseModel):
    """One entry of a job's integrations: {"type": "wandb", "wandb": {...}}."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["wandb"]
    """The tracker (OpenAI offers wandb; `tunesmith train --report-to` adds mlflow and tensorboard)."""
    wandb: WandbIntegration
    """Where the job's run is logged. The worker logs offline into the run folder unless WANDB_API_KEY is set in
    its environment."""


class JobRequest(BaseModel):
    """What a client sends to create a job."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=512)
    """The base model: a short name, a local folder or a .gguf file this server can load."""
    training_file: str = Field(min_length=1, max_length=64)
    """A file id with purpose fine-tune."""
    validation_file: str | None = Field(None, max_length=64)
    """A file id, or none: 10% of the training data is then held out."""
    hyperparameters: Hyperparameters | None = None
    """Older clients' place for them."""
    method: Method | None = None
    """Current clients' place for them: {"type": "supervised", "supervised": {"hyperparameters": ...}}, or
    {"type": "dpo", "dpo": {"hyperparameters": {"beta": ...}}} on a preference file."""
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """Part of the tuned model's name."""
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    """Seed of the run; random when not given."""
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)
    """Up to 16 key-value pairs, for the client's own use (the job list filters on them); keys of at most 64
    characters, values of at most 512, as OpenAI allows."""
    integrations: list[Integration] | None = Field(None, max_length=5)
    """Experiment tracking of the job's run: its settings, metrics and final report logged to W&B."""

    @model_validator(mode="after")
    def _one_place(self) -> JobRequest:
        inner = self.method.inner() if self.method else None
        if inner is not None and self.hyperparameters is not None:
            raise ValueError(f"give hyperparameters in method.{self.method_type()} or at the top level, not both")
        return self

    def method_type(self) -> str:
        """supervised unless the method says otherwise."""
        return self.method.type if self.method is not None else "supervised"

    def chosen_hyperparameters(self) -> Hyperparameters:
        inner = self.method.inner() if self.method is not None else None
        if inner is not None:
            return inner.hyperparameters
        return self.hyperparameters or Hyperparameters()
