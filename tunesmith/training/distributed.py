"""Several processes on one run, through torch.distributed: started by torchrun (or `tunesmith train --processes N`,
which starts it), gloo on CPU, NCCL on CUDA.

The plan is built once (rank 0's, sent to all) and every optimizer step's micro-batches are shared out: rank r
takes examples r, r + N, ... of each length-sorted micro-batch, so the global batch is the same for any N. Each
objective sums its loss, its normaliser (supervised tokens, pairs) and its metrics over the ranks (`total`), and
divides by the step's global count; DistributedDataParallel around the decoder then *sums* the ranks' gradients
(`_sum_hook`), so N ranks compute the gradient one process would. Only rank 0 writes the run folder.

With one process every function here is the identity and no process group exists.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tunesmith.errors import ConfigError, TrainingError
from tunesmith.training import sharding

T = TypeVar("T")
TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for a slow rank (rank 0 evaluates while the others wait) before failing; a rank
that dies is seen sooner, when its connections close."""
_DECODERS: weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module] = weakref.WeakKeyDictionary()
"""What training's forward passes call for each wrapped causal LM's decoder: the decoder under DDP, or the root
FSDP unit of a sharded one."""


def started() -> bool:
    """Whether this process is one of several ranks of a run."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if started() else 0


def size() -> int:
    return dist.get_world_size() if started() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes the run folder and reports."""
    return rank() == 0


def start() -> None:
    """Join the process group when torchrun started this process as one of several (WORLD_SIZE > 1); otherwise
    nothing. On CUDA each rank takes the GPU of its LOCAL_RANK."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    _own_compile_cache()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)


def _own_compile_cache() -> None:
    """A compile cache per rank of this host: ranks compiling the same kernel into one cache read each other's
    half-written libraries ("file too short")."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    local = os.environ.get("LOCAL_RANK", "0")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache_dir(), f"rank{local}")


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(window: Sequence[Sequence[int]], of: tuple[int, int] | None = None) -> list[list[int]]:
    """This rank's part of a step's micro-batches (empty ones left out): a disjoint, deterministic share; `of`:
    (rank, ranks) for another rank than this one."""
    r, n = of or (rank(), size())
    return [part for part in (list(indices[r::n]) for indices in window) if part]


def total(values: Sequence[float]) -> list[float]:
    """Each value summed over the ranks (in float64, so that counts stay exact)."""
    if not started():
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=_device())
    _collective(dist.all_reduce, tensor)
    return tensor.tolist()


def largest(value: int) -> int:
    """The largest of the ranks' values."""
    if not started():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=_device())
    _collective(dist.all_reduce, tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (a signal seen by one rank stops all after the same step)."""
    return total([1.0 if flag else 0.0])[0] > 0


def broadcast(value: T) -> T:
    """Rank 0's value on every rank."""
    if not started():
        return value
    box = [value]
    _collective(dist.broadcast_object_list, box, src=0)
    return box[0]  # type: ignore[return-value]


def gather(value: T) -> list[T]:
    """Every rank's value, in rank order, on every rank."""
    if not started():
        return [value]
    values: list[Any] = [None] * size()
    _collective(dist.all_gather_object, values, value)
    return values


def barrier() -> None:
    if started():
        _collective(dist.barrier)


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _collective(call: Any, *args: Any, **kwargs: Any) -> None:
    with _lost_peers():
        call(*args, **kwargs)


@contextmanager
def _lost_peers() -> Iterator[None]:
    """A collective that fails here failed because another rank is gone: one line saying so."""
    try:
        yield
    except (RuntimeError, dist.DistError) as exc:
        raise peer_lost(exc) from None


def lost_peer(exc: BaseException) -> bool:
    """Whether an error is a collective's failure (a rank gone), not a bug of this rank's own."""
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(w in text for w in ("gloo", "nccl", "connection", "peer"))


def peer_lost(exc: BaseException) -> TrainingError:
    """The one line a rank says when another rank of the run is gone."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". This is", 1)[0]  # gloo's source location, its advice
    return TrainingError(
        f"rank {rank()} of {size()}: another process of the run stopped ({first[:160]}); the run is stopped at "
        f"its last checkpoint",
        hint="see the other rank's message, then continue with: tunesmith train --resume RUN --processes N",
    )


def _sum_hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP checks the real annotations, not strings
    """DDP's all-reduce without its division by the world size: each rank's loss is already divided by the step's
    global count, so the ranks' gradients add up to the whole step's."""
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def wrap(lm: torch.nn.Module, shard_weights: bool = False, compute: torch.dtype = torch.float32) -> None:
    """Put the causal LM under torch.distributed when there are several ranks: its decoder under
    DistributedDataParallel for adapter runs, or every weight sharded by FSDP2 (`shard_weights`, method full;
    `compute`: the run's dtype, FSDP2's mixed precision on CUDA).

    Under DDP every trained weight lives in the decoder (a tied output head is its embedding), and the loss runs
    the output head only where tokens are learned, so the decoder is what goes through DDP."""
    if not started():
        return
    if shard_weights:
        _DECODERS[lm] = sharding.shard(lm, compute, cuda=dist.get_backend() == "nccl")
        return
    decoder = lm.get_decoder()  # type: ignore[operator]
    inside = {id(p) for p in decoder.parameters()}
    outside = [n for n, p in lm.named_parameters() if p.requires_grad and id(p) not in inside]
    if outside:
        raise ConfigError(
            f"trained weights outside the decoder ({outside[0]}) cannot be shared over processes yet",
            hint="train on one process, or leave the output head out of lora.targets",
        )
    device_ids = [torch.cuda.current_device()] if dist.get_backend() == "nccl" else None
    # every rank built the same weights from the same seed: no initial broadcast of the frozen base
    ddp = DistributedDataParallel(decoder, device_ids=device_ids, broadcast_buffers=False, init_sync=False)
    ddp.register_comm_hook(None, _sum_hook)
    _DECODERS[lm] = ddp


def decoder(lm: torch.nn.Module) -> torch.nn.Module:
    """What a training forward pass calls: the decoder, through DDP or FSDP2 where the run has several ranks."""
    wrapped = _DECODERS.get(lm)
    return wrapped if wrapped is not None else lm.get_decoder()  # type: ignore[operator]


def micro_batches(lm: torch.nn.Module, batches: Sequence[T]) -> Iterator[T]:
    """A step's local micro-batches to forward and backward in turn: gradients are kept local until the last, whose
    backward sums them over the ranks. A rank with fewer micro-batches than another joins the others' passes with
    passes that add zero (under DDP only the last, summing one; under FSDP2 every one, since each forward gathers
    the weights from all ranks), so that no rank waits."""
    wrapped = _DECODERS.get(lm)
    if wrapped is None:
        yield from batches
        return
    spread = sharding.sharded(lm)
    passes = largest(len(batches)) if spread else max(len(batches), 1)
    for index in range(passes):
        with _syncing(wrapped, spread, index == passes - 1):
            if index < len(batches):
                yield batches[index]
            else:
                _join_with_zero(lm, wrapped)


def _syncing(wrapped: torch.nn.Module, spread: bool, last: bool) -> AbstractContextManager[object]:
    """Whether this pass's backward reduces the gradients over the ranks (only the step's last pass does)."""
    if spread:
        sharding.set_gradient_sync(wrapped, last)
        return nullcontext()
    return nullcontext() if last else wrapped.no_sync()  # type: ignore[operator]


def _join_with_zero(lm: torch.nn.Module, wrapped: torch.nn.Module) -> None:
    device = lm.get_output_embeddings().weight.device  # type: ignore[operator]
    with _lost_peers():
        hidden = wrapped(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device)).last_hidden_state
        head = lm.get_output_embeddings()  # type: ignore[operator]
        (head(hidden).float().sum() * 0.0).backward()  # the head too: FSDP2 reduces every weight that has a gradient
