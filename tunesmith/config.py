"""Run settings (frozen, validated where they are made); the rules that fill in "auto" values are auto.py's."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    model_validator,
)

from tunesmith.errors import ConfigError, field_path
from tunesmith.models.sources import DEFAULT_MODEL

Auto = Literal["auto"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class LoraSettings(_Frozen):
    """The adapter of a LoRA or DoRA run."""

    rank: int = Field(16, gt=0)
    """Adapter rank: more capacity, more memory. Try 8, 16 or 32."""
    alpha: float = Field(32.0, gt=0)
    """Scale of the adapter's output is alpha / rank."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input while training; 0 is markedly faster (about 1.6x on CPU)."""
    targets: tuple[str, ...] = ("all-linear",)
    """Module names to adapt, or all-linear for every linear layer but the output head."""
    rslora: bool = False
    """Scale the adapter by alpha / sqrt(rank) (rsLoRA) instead of alpha / rank, so larger ranks still learn. The auto
    learning rate is set for alpha / rank: with rsLoRA divide it by the growth of the scale (2.8 at rank 32)."""
    b_lr_ratio: float = Field(1.0, gt=0)
    """LoRA+: the B matrices learn this many times faster than A (its paper suggests 16); 1 is plain LoRA."""


SOURCE_OBJECTIVES = ("sft", "text")
"""Objectives a source of a mix may choose for itself: both learn tokens by cross-entropy, so they share batches."""


class DataSource(_Frozen):
    """One source of training data; several make a mix (--data a.jsonl:3 --data b.jsonl:1@text)."""

    path: str
    """A file, folder or hub data set id."""
    weight: float | None = Field(None, gt=0)
    """Its share of each epoch's examples, relative to the other sources' weights (give every source a weight, or
    none: then each epoch holds every example of every source once)."""
    objective: Literal["sft", "text"] | None = None
    """sft or text for this source alone (a mix may learn documents as text beside conversations); none: the
    run's objective."""
    format: str | None = None
    """Input format of this source; none: the run's format."""
    split: str = "train"
    """The split of a hub data set to read."""

    @property
    def plain(self) -> bool:
        """Only a path: written as a bare string in config.yaml."""
        return self.weight is None and self.objective is None and self.format is None and self.split == "train"

    def __str__(self) -> str:
        weight = f":{self.weight:g}" if self.weight is not None else ""
        return f"{self.path}{weight}{'@' + self.objective if self.objective else ''}"


def parse_source(text: str) -> dict[str, Any]:
    """'docs.jsonl:0.3@text' -> {path: docs.jsonl, weight: 0.3, objective: text}; the suffixes are optional and
    read from the right, so a colon elsewhere in a path stays part of it."""
    path, values = text, {}
    head, at, tail = text.rpartition("@")
    if at and head and tail.isalpha():
        if tail not in SOURCE_OBJECTIVES:
            raise ValueError(f"{text}: a source's objective is one of {', '.join(SOURCE_OBJECTIVES)}, not {tail}")
        path, values["objective"] = head, tail
    head, colon, tail = path.rpartition(":")
    if colon and head:
        try:
            values["weight"] = float(tail)
        except ValueError:
            pass
        else:
            path = head
    return {"path": path, **values}


def as_sources(value: Any) -> Any:
    """A path, a list of paths (each may carry :weight and @objective) or of source mappings, as sources."""
    items = [value] if isinstance(value, str | DataSource) else value
    if not isinstance(items, list | tuple):
        return value
    return tuple(parse_source(item) if isinstance(item, str) else item for item in items)


def check_mix(sources: tuple[DataSource, ...]) -> tuple[DataSource, ...]:
    """Every source has a weight, or none has."""
    weighted = [s.weight is not None for s in sources]
    if any(weighted) and not all(weighted):
        missing = next(str(s.path) for s in sources if s.weight is None)
        raise ValueError(f"{missing} has no weight while other sources have one: give every source a weight, or none")
    return sources


Sources = Annotated[tuple[DataSource, ...], BeforeValidator(as_sources), AfterValidator(check_mix)]
"""Training data as the run and each stage take it: a path, or a mix of sources (see as_sources, check_mix)."""


class Stage(_Frozen):
    """One stage of a staged run: the settings it changes; its weights go on from the stage before (the same
    adapter trained further, or every weight for method full), with a fresh optimizer and schedule."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    """A short name (text, sft): the stage's folder is stages/<number>-<name>/."""
    data: Sources | None = None
    """This stage's training data, as the run's data (a path or a mix); none: the run's."""
    eval_data: str | None = None
    """This stage's held-out data; none: the run's, or a share of this stage's data."""
    objective: Literal["sft", "text", "dpo", "distill"] | None = None
    """What this stage learns (see the run's objective); none: the run's."""
    epochs: int | Auto | None = None
    """Passes over this stage's data; none: the run's setting."""
    max_steps: int | None = Field(None, gt=0)
    """Stop this stage after this many optimizer steps."""
    learning_rate: float | Auto | None = None
    """This stage's peak learning rate; none: the run's setting."""


DPO_BETA, SIMPO_BETA = 0.1, 2.0
"""beta "auto": DPO's paper and TRL's default; SimPO's paper (its length-normalised rewards are larger)."""


class PreferenceSettings(_Frozen):
    """How objective dpo learns from pairs of a chosen and a rejected answer."""

    loss: Literal["dpo", "simpo"] = "dpo"
    """dpo (sigmoid, against the model as it was before training: log-probs computed once and kept in the run
    folder); simpo (reference-free: mean log-prob per answer token, with a target margin)."""
    beta: float | Auto = "auto"
    """Strength of the preference: auto is 0.1 for dpo, 2.0 for simpo."""
    simpo_margin: float = Field(1.0, ge=0)
    """SimPO's target reward margin (gamma)."""
    sft_weight: float = Field(0.0, ge=0)
    """Add this times the supervised loss on the chosen answers (mean per token); 0 is pure preference."""

    def resolved_beta(self) -> float:
        return self.beta if self.beta != "auto" else (DPO_BETA if self.loss == "dpo" else SIMPO_BETA)


class ReinforcementSettings(_Frozen):
    """How objective grpo learns from graded answers of its own (group-relative policy optimisation)."""

    graders: tuple[str, ...] = ()
    """Grader files: each a JSON file holding one of OpenAI's grader objects, or a .py file defining
    grade(sample, item) (run as a python grader, in the sandbox). An answer's reward is the mean of their scores."""
    group_size: int = Field(4, ge=2)
    """Answers sampled per prompt (G): each is judged against the others of its group."""
    prompts_per_step: int = Field(4, gt=0)
    """Prompts per micro-batch (an optimizer step takes grad_accum micro-batches)."""
    max_answer_tokens: int = Field(256, gt=0)
    """The longest sampled answer, in tokens."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the answers (the loss reads log-probs at the same temperature)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling of the answers."""
    beta: float = Field(0.04, ge=0)
    """Weight of the KL penalty to the reference (the base: the adapter off; a frozen copy for method full)."""
    epsilon: float = Field(0.2, gt=0)
    """The ratio clip: the policy ratio counts only within 1 +- epsilon."""
    eval_samples: int | None = Field(None, gt=0)
    """Held-out prompts answered (greedy) and graded at each evaluation; none: all."""
    concurrency: int = Field(8, gt=0)
    """Answers graded at once (model graders wait on the network)."""


class TrackingSettings(_Frozen):
    """Where report_to logs a run."""

    project: str = "tunesmith"
    """The W&B project, or the MLflow experiment."""
    name: str | None = None
    """The run's name at the tracker (default: the run folder's name)."""
    entity: str | None = None
    """The W&B entity (team or user); default: the API key's."""
    tags: tuple[str, ...] = ()
    """Tags of the run (W&B tags, MLflow tags)."""


class RunConfig(_Frozen):
    """Everything a training run needs; "auto" values are filled in by `resolve` and written to config.yaml."""

    data: Sources = ()
    """Training data: a file, folder or hub data set id; several make a mix, each path[:weight][@objective] (a
    weight is a share of every epoch's examples; objective sft or text for that source alone). In YAML a list,
    also spelled datasets:, of paths or of {path, weight, objective, format, split}."""
    eval_data: str | None = None
    """Held-out data; when absent, 10% of the training data (at most 200 examples) is held out."""
    model: str = DEFAULT_MODEL
    """Short name, hub id, local folder or .gguf file."""
    format: str = "auto"
    """Input format of the data, or auto to detect it per file."""
    method: Literal["lora", "dora", "full"] = "lora"
    """lora or dora train a small adapter; full trains every weight."""
    objective: Literal["sft", "text", "dpo", "distill", "grpo"] = "sft"
    """sft learns the answers of conversations; text (continued pre-training) learns every token; dpo learns from
    preference pairs to give the chosen answer more probability than the rejected one (see preference); distill
    learns a teacher's answers as `tunesmith distill collect --logprobs K` stored them: its top-k distribution
    per answer token (KL, the rest of the mass as one bucket) where the student shares its tokenizer; grpo learns
    from its own answers, sampled in groups and scored by graders (see reinforcement)."""
    supervise: Literal["assistant", "last", "all"] = "assistant"
    """Which turns sft learns: every assistant turn, only the last one, or all tokens."""
    max_length: int = Field(2048, gt=1)
    """Longest example in tokens; longer ones keep their last whole answer that fits."""
    epochs: int | Auto = "auto"
    """Passes over the data; auto aims for 3 as OpenAI does."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer steps, whatever the epochs say."""
    learning_rate: float | Auto = "auto"
    """Peak learning rate; auto: for lora and dora 6.8e-4 x (2000 / the model's width)^0.781, 2e-5 for full."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """How the learning rate falls after warm-up."""
    warmup_steps: int | Auto = "auto"
    """Steps of linear warm-up; auto is 5% of the run."""
    batch_tokens: int | Auto = "auto"
    """Tokens (padding included) per micro-batch, examples of similar length together; auto: 2048 CPU, 16384 GPU,
    half that for objective dpo."""
    grad_accum: int = Field(1, gt=0)
    """Micro-batches per optimizer step; the loss is averaged over every supervised token of the window."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradients are clipped to this norm."""
    neftune_alpha: float = Field(0.0, ge=0)
    """NEFTune: uniform noise of scale alpha / sqrt(row tokens x width) on the input embeddings while training
    (its paper uses 5); 0 is off."""
    lora: LoraSettings = LoraSettings()
    """Adapter settings (lora and dora)."""
    preference: PreferenceSettings = PreferenceSettings()
    """Preference settings (objective dpo)."""
    reinforcement: ReinforcementSettings = ReinforcementSettings()
    """Reinforcement settings (objective grpo): graders, group size, sampling, KL and clip."""
    eval_every: int | Auto = "auto"
    """Steps between held-out evaluations (and one after the last step, which stands in for one due less than half
    an interval before it in the same epoch); auto: up to 5 per run, fewer when the held-out set is large, but at
    least one an epoch."""
    save_every: int | Literal["auto", "epoch"] = "auto"
    """Steps between checkpoints; auto is the same as eval_every, epoch is the steps of one epoch."""
    keep_checkpoints: int = Field(2, gt=0)
    """How many of the latest checkpoints to keep."""
    early_stopping: int | None = Field(None, gt=0)
    """Stop after this many evaluations without a better held-out loss."""
    final: Literal["best", "last"] = "best"
    """Which weights final/ holds: best, those of the evaluation with the lowest held-out loss (the last step when
    nothing is held out); last, those after the last step."""
    seed: int = 42
    """Seed of the adapter's initialisation, the shuffling, dropout and the held-out split."""
    device: str = "auto"
    """cuda, cpu, or auto for cuda when present."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto computes in bf16 where the hardware is fast at it (CUDA GPUs with bf16; CPUs whose bf16 matmuls measure
    >= 2x fp32), in fp16 with a loss scaler on CUDA GPUs without bf16 (T4, V100), else fp32."""
    quantize: Literal["none", "4bit", "8bit"] = "none"
    """QLoRA: load the frozen base of a lora or dora run in 4 bits (NF4, double quantisation) or 8 bits through
    bitsandbytes, on CUDA only; the adapter trained is an ordinary one of the full-precision base."""
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = "adamw"
    """adamw (torch's, moments in fp32); adamw_8bit and paged_adamw_8bit (bitsandbytes', CUDA only): moments in 8
    bits, a quarter of the memory; paged moves them to CPU memory when the GPU runs short."""
    threads: int | Auto = "auto"
    """CPU threads; auto is torch's default (the physical cores)."""
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile each decoder layer (fused kernels, fewer stored activations): up to 1.6x faster steps on CPU
    (1.0-1.3x without AMX), for a first step about 30 s longer on 2 cores (a few seconds once cached on disk);
    auto turns it on for runs of 50k tokens or more."""
    activation_checkpointing: bool | Auto = "auto"
    """Keep only each decoder layer's input and recompute the layer in backward: less memory when a micro-batch's
    activations are most of it (small models, long batches), for about a third more compute; runs uncompiled. auto
    turns it on where the memory plan (`tunesmith data check --model M`) says the batch would not fit otherwise."""
    trust_remote_code: bool = False
    """Run code shipped with a hub model; off unless you trust it."""
    start_from: str | None = None
    """Begin from trained weights instead of the bare model: the final/ folder of an earlier run of the same model
    and method (its adapter is trained further; for full, its weights)."""
    report_to: tuple[Literal["wandb", "mlflow", "tensorboard"], ...] = ()
    """Experiment trackers that get the run's settings, every step's and evaluation's metrics and the final
    evaluation report: wandb (offline unless WANDB_API_KEY or WANDB_MODE says otherwise), mlflow (the server or
    store MLFLOW_TRACKING_URI names, else a store in the run folder), tensorboard (event files in the run folder)."""
    tracking: TrackingSettings = TrackingSettings()
    """Project, name, entity and tags at the trackers of report_to."""
    stages: tuple[Stage, ...] = ()
    """Run these stages one after the other in one run folder (e.g. text on documents, then sft on questions and
    answers), each from the weights the one before ended with; see Stage."""

    @model_validator(mode="after")
    def _has_data(self) -> RunConfig:
        if not self.data and (not self.stages or any(stage.data is None for stage in self.stages)):
            raise ValueError("field data: Field required (give the training data, here or in every stage)")
        if self.stages and self.start_from is not None:
            raise ValueError("field start_from: a staged run starts its first stage from the model itself")
        return self

    def stage(self, index: int, start_from: str | None) -> RunConfig:
        """The settings of stage `index`: the run's, with what the stage changes, starting from `start_from`."""
        changes = self.stages[index].model_dump(mode="json", exclude_none=True, exclude={"name"})
        values = self.model_dump(mode="json", exclude={"stages"}) | changes | {"start_from": start_from}
        return RunConfig.model_validate(values)

    @field_serializer("data")
    def _write_sources(self, sources: tuple[DataSource, ...]) -> Any:
        """One plain source stays a bare path in config.yaml, so that a run's digest does not change with the
        form its source was given in."""
        if len(sources) == 1 and sources[0].plain:
            return sources[0].path
        return [s.path if s.plain else s.model_dump(exclude_defaults=True) for s in sources]

    @property
    def source(self) -> str:
        """The first training source's path: what a one-source run trains on, and a mix's main task."""
        return self.data[0].path

    def __str__(self) -> str:
        return self.to_yaml()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def digest(self) -> str:
        """A hash of every setting that changes what is trained (not where it runs)."""
        fields = self.model_dump(mode="json", exclude={"device", "threads"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def build_config(values: Mapping[str, Any], source: str = "config") -> RunConfig:
    """Validate settings; the first problem becomes one line naming the field. `datasets:` (Axolotl's name for the
    list) is read as `data`."""
    values = dict(values)
    if "datasets" in values:
        if "data" in values:
            raise ConfigError(f"{source}: both data and datasets are given", hint="keep one of them")
        values["data"] = values.pop("datasets")
    try:
        return RunConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_path(first["loc"])
        given = f" (got {first['input']!r})" if first["type"] != "missing" else ""
        hint = "remove it or check its spelling" if first["type"] == "extra_forbidden" else "see tunesmith train --help"
        message = str(first["msg"]).removeprefix("Value error, ")
        where = f"field {field}: " if field else ""
        raise ConfigError(f"{source}: {where}{message}{given if field else ''}", hint=hint) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML mapping of settings (a missing file or a broken one is an error naming it)."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", hint="check the path") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return values


def merge_settings(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Settings from a file with command-line values on top; dotted keys (lora.rank) reach into parts."""
    merged: dict[str, Any] = {key: dict(v) if isinstance(v, Mapping) else v for key, v in base.items()}
    if "data" in overrides:
        merged.pop("datasets", None)  # --data replaces the file's list, whatever it was called
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            part = merged.setdefault(head, {})
            if not isinstance(part, dict):
                raise ConfigError(f"field {head} is not a group of settings, so {key} cannot be set")
            part[rest] = value
        else:
            merged[key] = value
    return merged


def parse_assignment(text: str) -> tuple[str, Any]:
    """'lora.rank=8' -> ('lora.rank', 8): the value is read as YAML, so numbers and lists work."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r} is not field=value", hint="e.g. --set lora.rank=8")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value
