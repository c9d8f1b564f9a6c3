"""A tokenizer in a GGUF file, as llama.cpp reads it: byte-level BPE (SmolLM2, Llama 3, Qwen) as `gpt2` with its
merges; SentencePiece-style BPE with byte fallback (Gemma, Mistral v0.1-0.3, Phi-3, Llama 2) as `llama`, each
piece scored by its rank as SentencePiece scores BPE pieces; special tokens and the chat template with either.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import gguf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.errors import ExportError
from tunesmith.tokenize.encode import plain_backend

SPLITS = (("\\p{N}{1,3}", "llama-bpe"), ("\\p{L}+|\\p{N}|", "qwen2"))
"""A marker of the text-splitting regex in a tokenizer.json's pre-tokenizer, and llama.cpp's name for it (Llama 3's
groups up to three digits, Qwen's splits every digit)."""
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _token_types(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    tokens, types = [], []
    added = tokenizer.added_tokens_decoder
    known = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for i in range(vocab_size):
        if i >= len(known) or known[i] is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(known[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _kind(spec: dict) -> str | None:
    """gpt2 (byte-level BPE), llama (BPE with byte fallback over SentencePiece's "▁" spaces), or None."""
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        return None
    if "ByteLevel" in json.dumps(spec.get("pre_tokenizer")):
        return "gpt2"
    return "llama" if model.get("byte_fallback") else None


def _piece_types(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[float], list[int]]:
    """SentencePiece's view of a vocabulary: each piece, its score (minus its id: a BPE piece merged earlier scores
    higher, as SentencePiece scores them, which is how llama.cpp picks merges) and its type (byte pieces <0xNN> as
    BYTE)."""
    tokens, types = _token_types(tokenizer, vocab_size)
    scores = [-float(i) for i in range(vocab_size)]
    for i, token in enumerate(tokens):
        if types[i] == gguf.TokenType.NORMAL and BYTE_PIECE.fullmatch(token):
            types[i] = gguf.TokenType.BYTE
    return tokens, scores, types


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """The vocabulary, its merges or scores, special tokens and chat template."""
    backend = plain_backend(tokenizer)
    spec = json.loads(backend.to_str()) if backend is not None else {}  # its tokenizer.json, parsed once
    kind = _kind(spec)
    if kind is None:
        raise ExportError(
            "GGUF export supports byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen) and SentencePiece-style BPE "
            "with byte fallback (Gemma, Mistral, Phi-3); this one is neither",
            hint="export it with --format merged (safetensors) instead",
        )
    vocab_size = model.config.vocab_size
    writer.add_tokenizer_model(kind)
    if kind == "gpt2":
        tokens, types = _token_types(tokenizer, vocab_size)
        writer.add_tokenizer_pre(_pre_tokenizer(model, tokenizer, spec))
    else:
        tokens, scores, types = _piece_types(tokenizer, vocab_size)
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(_prepends_space(spec))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        special = gguf.SpecialVocab(Path(folder), load_merges=kind == "gpt2", n_vocab=vocab_size)
    # said always: llama.cpp's default differs by vocabulary kind, and Ollama adds bos by this key
    special.add_special_token["bos"] = adds_bos(tokenizer)
    special.add_to_gguf(writer, quiet=True)


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer starts every text with its bos token (Llama, Gemma, Mistral; not Qwen or SmolLM2)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def _prepends_space(spec: dict) -> bool:
    """Whether the normaliser puts "▁" before the text, as Llama 2 and Mistral's do and Gemma's does not."""
    return "Prepend" in json.dumps(spec.get("normalizer"))


def _pre_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: dict) -> str:
    """llama.cpp's name for how this byte-level vocabulary splits text before BPE: read from the tokenizer's own
    pre-tokenizer (its regex), SmolLM2's known by its vocabulary, GPT-2's plain byte-level split otherwise."""
    if "<|im_start|>" in tokenizer.get_vocab() and model.config.vocab_size == 49152:
        return "smollm"
    described = json.dumps(spec.get("pre_tokenizer"))
    return next((name for marker, name in SPLITS if marker in described), "gpt-2")
