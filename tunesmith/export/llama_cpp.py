"""llama.cpp itself, through llama-cpp-python where it is installed: an exported GGUF loaded, measured and asked by
the runtime people deploy it to, not by our own reading of the file.

llama-cpp-python ships as a source distribution that builds llama.cpp (minutes on 2 cores); `make setup` builds it
for the CPUs of every machine we run on (AVX2, no -march=native) and the wheel is cached. Without it, `missing()`
says how to get it and callers skip what needs it.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
from collections.abc import Sequence
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

import numpy as np

INSTALL = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python: it builds llama.cpp, a few minutes'


def missing() -> str | None:
    """Why llama.cpp cannot run here, or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed ({INSTALL})"
    return None


@contextmanager
def _quiet_stderr() -> Any:
    """llama.cpp logs model loading on the process's stderr (file descriptor 2) and through Python's sys.stderr
    even when asked not to."""
    saved = os.dup(2)
    with open(os.devnull, "w", encoding="utf-8") as null, redirect_stderr(io.StringIO()):
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _cores() -> int:
    """The cores this process may use (all of them where the OS cannot say, as on macOS)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return max(1, len(affinity(0)) if affinity else os.cpu_count() or 1)


def load(
    path: Path, context: int = 2048, lora: Path | None = None, all_logits: bool = False, f32_cache: bool = False
) -> Any:
    """The GGUF file loaded by llama.cpp (with a GGUF LoRA adapter applied when given); `all_logits` keeps every
    position's logits (for perplexity); `f32_cache` keeps attention's keys and values in f32 instead of llama.cpp's
    default f16 (to compare an f32 file with the model itself)."""
    from llama_cpp import GGML_TYPE_F32, Llama

    cache = {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if f32_cache else {}
    with _quiet_stderr():
        return Llama(
            model_path=str(path),
            n_ctx=context,
            n_threads=_cores(),
            logits_all=all_logits,
            lora_path=str(lora) if lora else None,
            verbose=False,
            **cache,
        )


def perplexity(llm: Any, texts: Sequence[str]) -> float:
    """exp of the mean negative log-likelihood llama.cpp's logits give each next token of `texts` (each tokenized by
    the file's own tokenizer, special tokens read as such, cut to the context)."""
    total, count = 0.0, 0
    for text in texts:
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=_adds_bos(llm), special=True)[: llm.n_ctx()]
        if len(tokens) < 2:
            continue
        llm.reset()
        llm.eval(tokens)
        logits = np.asarray(llm.scores[: len(tokens) - 1], dtype=np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        chosen = logits[np.arange(len(tokens) - 1), tokens[1:]]
        total += float((log_norm - chosen).sum())
        count += len(tokens) - 1
    return math.exp(total / max(count, 1))


def _adds_bos(llm: Any) -> bool:
    return bool(llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true")


def greedy_chat(llm: Any, messages: list[dict[str, Any]], max_tokens: int) -> str:
    """llama.cpp's greedy answer to a conversation, rendered by the file's own chat template."""
    answer = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=max_tokens)
    return answer["choices"][0]["message"]["content"] or ""


def chat_tokens(llm: Any, template: str, messages: Sequence[dict[str, str]], bos: str, eos: str) -> list[int]:
    """The tokens llama-cpp-python's chat completion feeds the model for a conversation: the chat template rendered
    by its Jinja2 formatter (bos written by the template, none added), tokenised by llama.cpp."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    prompt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(messages=list(messages)).prompt
    return list(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))


def ollama_tokens(llm: Any, rendered: str) -> list[int]:
    """The tokens Ollama feeds the model for a prompt its TEMPLATE rendered: tokenised by llama.cpp, bos added where
    the file says the tokenizer adds it."""
    return list(llm.tokenize(rendered.encode("utf-8"), add_bos=_adds_bos(llm), special=True))


K_QUANTS = {"q6_k": 18, "q5_k_m": 17, "q4_k_m": 15}
"""llama.cpp's k-quant file types (llama_ftype) that its own quantiser writes from an f16 file."""


def quantize(source: Path, target: Path, dtype: str) -> None:
    """`source` (an f16 GGUF) quantised by llama.cpp's llama_model_quantize into `target` as `dtype` (K_QUANTS),
    with llama-quantize's per-tensor choices (e.g. Q4_K_M keeps half of the attention values and FFN down weights
    at Q6_K, the output head at Q6_K)."""
    import ctypes

    import llama_cpp as low

    params = low.llama_model_quantize_default_params()
    params.ftype = K_QUANTS[dtype]
    params.nthread = _cores()
    with _quiet_stderr():
        code = low.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0:
        raise RuntimeError(f"llama.cpp could not quantise {source} to {dtype} (code {code})")


def ends_generation(llm: Any, text: str) -> bool:
    """Whether `text` is one token that llama.cpp ends generation at (its end-of-generation set, read from the
    file's special tokens): what an Ollama `PARAMETER stop` should name."""
    import llama_cpp as low

    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    return len(ids) == 1 and bool(low.llama_vocab_is_eog(llm._model.vocab, ids[0]))
