"""A tokenizer in a GGUF file, as llama.cpp reads it: byte-level BPE (SmolLM2, Llama 3, Qwen) as `gpt2` with its
merges; SentencePiece BPE with byte fallback (Gemma, Mistral v0.1-0.3, Phi-3, Llama 2) as `llama`, its pieces,
scores and types read from the model's own tokenizer.model as llama.cpp's converter reads them (or, where the model
ships only tokenizer.json, each piece scored by its rank); special tokens and the chat template with either.
"""

from __future__ import annotations

import json
import logging
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
log = logging.getLogger(__name__)


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


Pieces = tuple[list[str], list[float], list[int]]
"""Each token's text, score and type, as a `llama` vocabulary holds them."""


def _piece_types(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> Pieces:
    """SentencePiece's view of a vocabulary known only by its tokenizer.json: each piece, its score (minus its id: a
    BPE piece merged earlier scores higher, as SentencePiece scores them, which is how llama.cpp picks merges) and its
    type (byte pieces <0xNN> as BYTE)."""
    tokens, types = _token_types(tokenizer, vocab_size)
    scores = [-float(i) for i in range(vocab_size)]
    for i, token in enumerate(tokens):
        if types[i] == gguf.TokenType.NORMAL and BYTE_PIECE.fullmatch(token):
            types[i] = gguf.TokenType.BYTE
    return tokens, scores, types


def _model_pieces(model_file: Path, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> Pieces | None:
    """The pieces, scores and types of a SentencePiece tokenizer.model (gguf's SentencePieceVocab, as llama.cpp's
    converter reads them), with the tokenizer's added tokens over its normal pieces and after them (special ones
    CONTROL, the rest USER_DEFINED) and unused ids after those; None where the pieces are not this tokenizer's."""
    tokens, scores, types = [], [], []
    for text, score, kind in gguf.SentencePieceVocab(model_file.parent).sentencepiece_tokens():
        tokens.append(text.decode("utf-8"))
        scores.append(score)
        types.append(int(kind))
    added = tokenizer.added_tokens_decoder
    known = tokenizer.convert_ids_to_tokens(list(range(min(len(tokens), len(tokenizer)))))
    if len(tokens) > vocab_size or any(known[i] != tokens[i] for i in range(len(known)) if i not in added):
        return None
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]")
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    for i, token in added.items():
        if i < vocab_size and types[i] in (gguf.TokenType.NORMAL, gguf.TokenType.UNUSED):  # the model's own types kept
            tokens[i] = token.content
            types[i] = gguf.TokenType.CONTROL if token.special else gguf.TokenType.USER_DEFINED
    return tokens, scores, types


def add_tokenizer(
    writer: gguf.GGUFWriter,
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel,
    sentencepiece: Path | None = None,
) -> None:
    """The vocabulary, its merges or scores, special tokens and chat template; a `llama` vocabulary's pieces from
    `sentencepiece` (the model's tokenizer.model) where given and matching the tokenizer."""
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
        pieces = _model_pieces(sentencepiece, tokenizer, vocab_size) if sentencepiece is not None else None
        if sentencepiece is not None and pieces is None:
            log.warning("%s does not match the tokenizer: its pieces are scored by their rank instead", sentencepiece)
        tokens, scores, types = pieces or _piece_types(tokenizer, vocab_size)
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


PHI3_NAME = re.compile(r"phi-?3", re.IGNORECASE)
NOT_STRIPPING = {"<unk>", "<s>", "<|endoftext|>"}
"""The control tokens llama.cpp leaves alone when it makes a Phi-3 vocabulary's others strip."""


def llama_cpp_name(name: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The file's general.name, which llama.cpp also reads as a switch (GGUF has no key for it): a name holding
    "phi3" or "phi-3" makes every control token but <unk>, <s> and <|endoftext|> swallow the whitespace after it, as
    Phi-3's tokenizer marks them. So the name says phi3 exactly when this tokenizer strips so, and a run named
    "phi3-..." of a tokenizer that does not strip is named "phi 3-..." in the file."""
    decoder = tokenizer.added_tokens_decoder.values()
    strips = any(token.rstrip for token in decoder if token.special and token.content not in NOT_STRIPPING)
    if strips:
        return name if PHI3_NAME.search(name) else f"{name} (phi3)"
    return PHI3_NAME.sub("phi 3", name)


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer starts every text with its bos token (Llama, Gemma, Mistral; not Qwen or SmolLM2)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def _prepends_space(spec: dict) -> bool:
    """Whether "▁" goes before the text, as Llama 2's and Mistral's tokenizers put it and Gemma's does not: by the
    normaliser (their tokenizer.json) or by a Metaspace pre-tokenizer that prepends (transformers' conversion of a
    tokenizer.model)."""
    pre = spec.get("pre_tokenizer") or {}
    metaspace = [step for step in pre.get("pretokenizers", [pre]) if step.get("type") == "Metaspace"]
    return "Prepend" in json.dumps(spec.get("normalizer")) or any(
        step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never") != "never"
        for step in metaspace  # older tokenizer.json files say add_prefix_space
    )


def _pre_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: dict) -> str:
    """llama.cpp's name for how this byte-level vocabulary splits text before BPE: read from the tokenizer's own
    pre-tokenizer (its regex), SmolLM2's known by its vocabulary, GPT-2's plain byte-level split otherwise."""
    if "<|im_start|>" in tokenizer.get_vocab() and model.config.vocab_size == 49152:
        return "smollm"
    described = json.dumps(spec.get("pre_tokenizer"))
    return next((name for marker, name in SPLITS if marker in described), "gpt-2")
