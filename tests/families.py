"""The model families people fine-tune, as tiny random models: each a local folder with the family's architecture
(its own config class, shrunk), its real chat template (tests/families/*.jinja) and its special tokens.

The vocabulary is small (the layouts and templates are the matter, a 150k vocabulary would only cost time): a
byte-level BPE with the family's special tokens added at the end (Llama 3, Qwen), or a real SentencePiece BPE model
with byte fallback shipped as tokenizer.model beside its tokenizer.json (Gemma, Mistral, Phi-3), as each family's own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "families"
SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
SHAPE |= {"num_key_value_heads": 2, "max_position_embeddings": 1024, "initializer_range": 0.2}


@dataclass(frozen=True)
class Family:
    """One model family: how its tiny model and tokenizer are built."""

    name: str
    """Short name, used as the test id."""
    template: str
    """File name of its chat template under tests/families/."""
    specials: tuple[str, ...]
    """Its special tokens, in the order its tokenizer lists them."""
    bos: str | None
    """Its begin-of-text token (None where the family has none)."""
    eos: str
    """The tokenizer's eos token."""
    pad: str
    """The pad token."""
    end_of_turn: str
    """The token that closes an assistant turn under the template (what generation stops at)."""
    config: Callable[[dict], object] = field(repr=False, default=lambda common: None)
    """Builds the transformers config from the common sizes and token ids."""
    extra_tokens: tuple[str, ...] = ()
    """Added tokens that are not special (Qwen3's <think>)."""
    split: str | None = None
    """A byte-level family's own text-splitting regex (None: GPT-2's)."""
    rstrip: tuple[str, ...] = ()
    """Special tokens that swallow the whitespace after them (Phi-3's chat tokens, as its tokenizer.json marks them)."""
    sentencepiece: str | None = None
    """None: byte-level BPE (Llama 3, Qwen); else SentencePiece-style BPE with byte fallback, "prepend" where the
    normaliser puts "▁" before the text (Llama 2, Mistral, Phi-3) or "plain" where it does not (Gemma)."""


def _llama(common: dict) -> object:
    from transformers import LlamaConfig

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0}
    rope |= {"high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    return LlamaConfig(**common, tie_word_embeddings=True, rope_parameters=rope)


def _qwen2(common: dict) -> object:
    from transformers import Qwen2Config

    return Qwen2Config(**common, tie_word_embeddings=True)


def _qwen3(common: dict) -> object:
    from transformers import Qwen3Config

    return Qwen3Config(**common, head_dim=128, tie_word_embeddings=True)  # 128 as every Qwen3 size


def _gemma2(common: dict) -> object:
    from transformers import Gemma2Config

    return Gemma2Config(
        **common, head_dim=256, query_pre_attn_scalar=256, sliding_window=8, hidden_activation="gelu_pytorch_tanh"
    )


def _gemma3(common: dict) -> object:
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**common, head_dim=256, query_pre_attn_scalar=256, sliding_window=8)


def _mistral(common: dict) -> object:
    from transformers import MistralConfig

    return MistralConfig(**common, tie_word_embeddings=False)


def _phi3(common: dict) -> object:
    from transformers import Phi3Config

    return Phi3Config(**common, tie_word_embeddings=False)


QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|DIGITS| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
SPLIT += r"|\s+(?!\S)|\s+"
LLAMA3_SPLIT, QWEN_SPLIT = SPLIT.replace("DIGITS", r"\p{N}{1,3}"), SPLIT.replace("DIGITS", r"\p{N}")
"""The tokenizer.json regexes of Llama 3 (up to three digits together) and Qwen (one digit a token)."""
FAMILIES = (
    Family(
        "llama3",
        "llama-3.2.jinja",
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|end_of_text|>",
        end_of_turn="<|eot_id|>",
        config=_llama,
        split=LLAMA3_SPLIT,
    ),
    Family(
        "qwen2.5",
        "qwen2.5.jinja",
        QWEN_SPECIALS,
        None,
        "<|im_end|>",
        "<|endoftext|>",
        "<|im_end|>",
        _qwen2,
        split=QWEN_SPLIT,
    ),
    Family(
        "qwen3",
        "qwen3.jinja",
        QWEN_SPECIALS,
        None,
        "<|im_end|>",
        "<|endoftext|>",
        "<|im_end|>",
        _qwen3,
        extra_tokens=("<think>", "</think>"),
        split=QWEN_SPLIT,
    ),
    Family(
        "gemma2",
        "gemma-2.jinja",
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
        "<bos>",
        "<eos>",
        "<pad>",
        "<end_of_turn>",
        _gemma2,
        sentencepiece="plain",
    ),
    Family(
        "gemma3",
        "gemma-3.jinja",
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
        "<bos>",
        "<eos>",
        "<pad>",
        "<end_of_turn>",
        _gemma3,
        sentencepiece="plain",
    ),
    Family(
        "mistral",
        "mistral-v0.2.jinja",
        ("<unk>", "<s>", "</s>"),
        "<s>",
        "</s>",
        "</s>",
        "</s>",
        _mistral,
        sentencepiece="prepend",
    ),
    Family(
        "phi3",
        "phi-3.5.jinja",
        ("<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"),
        "<s>",
        "<|endoftext|>",
        "<|endoftext|>",
        "<|end|>",
        _phi3,
        rstrip=("</s>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"),
        sentencepiece="prepend",
    ),
)
BY_NAME = {family.name: family for family in FAMILIES}

CORPUS = [f"What is {i} + {i}? {i} + {i} is {2 * i}. The answer is alpha\n\nBeta it is, always." for i in range(100)]
"""What the tiny vocabularies are learned from (blank lines too, a token of their own as in real vocabularies)."""


def _byte_level(family: Family):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    if family.split:
        split = pre_tokenizers.Split(Regex(family.split), behavior="isolated")
        bpe.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(False, use_regex=False)])
    else:
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=list(family.specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    return bpe


SPM_ROLES = {"<unk>": "unk", "<s>": "bos", "<bos>": "bos", "</s>": "eos", "<eos>": "eos", "<pad>": "pad"}
"""SentencePiece's own control pieces, by the name its trainer gives each role."""


@functools.cache
def sentencepiece_model(family: Family) -> bytes:
    """A real SentencePiece BPE model (tokenizer.model) with byte fallback, trained as Llama 2's and Gemma's were:
    the family's leading special tokens are SentencePiece's own control pieces (unk, bos, eos, pad at the family's
    ids), its other special tokens user-defined pieces where the family has them inside the model (Gemma) and tokens
    added after it otherwise (Phi-3); digits split; "▁" put before the text where the family does (add_dummy_prefix)."""
    import io

    import sentencepiece

    core = [token for token in family.specials if token in SPM_ROLES]
    ids = {f"{SPM_ROLES[token]}_id": i for i, token in enumerate(core)}
    pieces = {f"{SPM_ROLES[token]}_piece": token for token in core}
    inside = [t for t in family.specials if t not in SPM_ROLES] if family.sentencepiece == "plain" else []
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        model_type="bpe",
        vocab_size=300 + len(core) + len(inside),
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        add_dummy_prefix=family.sentencepiece == "prepend",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        user_defined_symbols=inside,
        num_threads=1,
        minloglevel=2,
        **({"pad_id": -1} | ids | pieces),
    )
    return model.getvalue()


def _sentencepiece(family: Family):
    """The family's tokenizer.json as transformers converts a SentencePiece BPE model: its pieces in id order, merges
    ranked by the merged piece's score, byte fallback, "▁" for spaces (and before the text where the family puts it
    there), and the tokens the family adds after the model."""
    import tempfile

    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

    with tempfile.NamedTemporaryFile(suffix=".model") as file:
        file.write(sentencepiece_model(family))
        file.flush()
        vocab, _, merges = SentencePieceExtractor(file.name).extract()
    prepend = family.sentencepiece == "prepend"
    spaces = [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")] if prepend else [normalizers.Replace(" ", "▁")]
    spm = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    spm.normalizer = normalizers.Sequence(spaces)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    spm.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prepend else []))
    added = [AddedToken(t, normalized=False, special=True, rstrip=t in family.rstrip) for t in family.specials]
    spm.add_special_tokens(added)
    return spm


def family_tokenizer(family: Family):
    """A BPE of about 300 learned tokens (byte-level, or SentencePiece-style as the family's own) with the family's
    special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_sentencepiece(family) if family.sentencepiece else _byte_level(family),
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        chat_template=(TEMPLATES / family.template).read_text(encoding="utf-8"),
    )
    if family.extra_tokens:
        tokenizer.add_tokens(list(family.extra_tokens))
    return tokenizer


def make_family_model(family: Family, path: Path, seed: int = 0) -> Path:
    """The family's tiny random model and tokenizer, saved as a local folder."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = family_tokenizer(family)
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    ids |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = family.config(SHAPE | ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # nn.Embedding zeroes the pad row; a real model's is not zero
        model.get_input_embeddings().weight[tokenizer.pad_token_id].normal_(0, 0.2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if family.sentencepiece:  # shipped beside tokenizer.json, as the family's own repositories ship it
        (path / "tokenizer.model").write_bytes(sentencepiece_model(family))
    return path
