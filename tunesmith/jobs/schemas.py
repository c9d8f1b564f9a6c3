"""The body of POST /v1/fine_tuning/jobs in OpenAI's shape, validated: a bad value is a 400 naming its field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    """OpenAI's hyperparameters, each "auto" or a value (see docs/from-openai.md for what they mean here)."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    """Passes over the training data."""
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    """Examples per optimizer step, about (tokens are what is batched here)."""
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=10)] | Auto = "auto"
    """Times tunesmith's automatic learning rate for the method (2e-4 for LoRA and DoRA, 2e-5 for full)."""
    finetuning_type: Literal["lora", "dora", "full"] | Auto = "auto"
    """tunesmith's own: which weights are trained (an adapter, or every weight); auto is lora."""
    lora_rank: Annotated[int, Field(ge=1, le=1024)] | Auto = "auto"
    """tunesmith's own: the rank of a LoRA or DoRA adapter; auto is the training default."""


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Hyperparameters()
    """As the top-level hyperparameters."""


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["supervised", "dpo", "reinforcement"]
    """supervised trains on answers; dpo and reinforcement are not available yet."""
    supervised: Supervised | None = None
    """Its hyperparameters."""


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
    """Current clients' place for them: {"type": "supervised", "supervised": {"hyperparameters": ...}}."""
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """Part of the tuned model's name."""
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    """Seed of the run; random when not given."""
    metadata: dict[str, str] | None = Field(None, max_length=16)
    """Up to 16 key-value pairs, for the client's own use (the job list filters on them)."""
    integrations: list[Any] | None = None
    """Accepted and ignored (no Weights & Biases here)."""

    @model_validator(mode="after")
    def _one_place(self) -> JobRequest:
        inner = self.method.supervised if self.method and self.method.supervised else None
        if inner is not None and self.hyperparameters is not None:
            raise ValueError("give hyperparameters in method.supervised or at the top level, not both")
        return self

    def chosen_hyperparameters(self) -> Hyperparameters:
        if self.method is not None and self.method.supervised is not None:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()
