"""The body of POST /v1/fine_tuning/jobs in OpenAI's shape, validated: a bad value is a 400 naming its field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunesmith.graders.spec import GraderError, as_json, read_grader

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
    learning_rate: Annotated[float, Field(gt=0, le=1)] | Auto = "auto"
    """tunesmith's own: the peak learning rate itself (instead of learning_rate_multiplier)."""


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


class ReinforcementHyperparameters(Hyperparameters):
    """OpenAI's reinforcement hyperparameters (docs/graders.md says what each becomes here)."""

    compute_multiplier: Annotated[float, Field(gt=0, le=10)] | Auto = "auto"
    """Times the answers sampled per prompt (4 at 1, at least 2)."""
    eval_interval: Annotated[int, Field(ge=1)] | Auto = "auto"
    """Steps between held-out evaluations."""
    eval_samples: Annotated[int, Field(ge=1)] | Auto = "auto"
    """Held-out prompts answered and graded at each evaluation."""
    reasoning_effort: Literal["default", "low", "medium", "high"] = "default"
    """Accepted for OpenAI's shape; the open models trained here have no separate reasoning budget to set."""
    max_answer_tokens: Annotated[int, Field(ge=1, le=8192)] | Auto = "auto"
    """tunesmith's own: the longest sampled answer, in tokens (auto: 256)."""


class ReinforcementMethod(BaseModel):
    """OpenAI's method.reinforcement: the grader and the hyperparameters."""

    model_config = ConfigDict(extra="forbid")

    grader: dict[str, Any]
    """One of OpenAI's grader objects (string_check, text_similarity, python, score_model, label_model, multi)."""
    hyperparameters: ReinforcementHyperparameters = ReinforcementHyperparameters()
    """As the supervised ones, with compute_multiplier, eval_interval, eval_samples and reasoning_effort."""

    @field_validator("grader")
    @classmethod
    def _grader(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            return as_json(read_grader(value, where="method.reinforcement.grader"))
        except GraderError as exc:
            raise ValueError(exc.message) from None


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["supervised", "dpo", "reinforcement"]
    """supervised trains on answers; dpo on preference pairs; reinforcement on prompts and a grader (grpo)."""
    supervised: SupervisedMethod | None = None
    """Its hyperparameters, for type supervised."""
    dpo: DpoMethod | None = None
    """Its hyperparameters, for type dpo."""
    reinforcement: ReinforcementMethod | None = None
    """Its grader and hyperparameters, for type reinforcement."""

    @model_validator(mode="after")
    def _own_place(self) -> Method:
        for other in ("supervised", "dpo", "reinforcement"):
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"method {self.type} takes its hyperparameters in method.{self.type}, not {other}")
        if self.type == "reinforcement" and self.reinforcement is None:
            raise ValueError("method reinforcement needs method.reinforcement.grader")
        return self

    def inner(self) -> SupervisedMethod | DpoMethod | ReinforcementMethod | None:
        """The hyperparameters' holder for this method's type."""
        return {"supervised": self.supervised, "dpo": self.dpo, "reinforcement": self.reinforcement}[self.type]


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

    def method_record(self) -> dict[str, Any]:
        """What the store keeps of the method: its type, and a reinforcement job's grader."""
        inner = self.method.inner() if self.method is not None else None
        grader = {"grader": inner.grader} if isinstance(inner, ReinforcementMethod) else {}
        return {"type": self.method_type()} | grader

    def chosen_hyperparameters(self) -> Hyperparameters:
        inner = self.method.inner() if self.method is not None else None
        if inner is not None:
            return inner.hyperparameters
        return self.hyperparameters or Hyperparameters()
