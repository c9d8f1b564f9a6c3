"""SentencePiece vocabularies in GGUF, tokenised by real llama.cpp: the tiny Gemma, Mistral and Phi-3 families (a
real SentencePiece BPE model with byte fallback, shipped as tokenizer.model beside tokenizer.json) and a Llama 2
style folder (tokenizer.model alone, bos added by the tokenizer)."""

from __future__ import annotations

import gguf
import pytest
import sentencepiece
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaTokenizer

from tests.families import BY_NAME, make_family_model, sentencepiece_model
from tunesmith.export import llama_cpp
from tunesmith.export.gguf_file import write_gguf
from tunesmith.models.sources import model_file

pytestmark = pytest.mark.skipif(
    llama_cpp.missing() is not None, reason=f"{llama_cpp.missing()}; `make setup` builds it"
)
TEXTS = [
    "What is 7 + 7? 7 + 7 is 14. The answer is alpha",
    "Beta it is, always.\n\nWhat is 123 + 4567?",
    "naïve café, 漢字 and 🙂 are not in the vocabulary: bytes",
    "  two spaces first,  two inside,\ttab and trailing ",
    "alphabet betatron iswhat answered",
]
"""In-vocabulary text, digits, blank lines, characters only byte fallback can spell, odd whitespace, and words the
vocabulary splits into pieces."""


def _llama_cpp_tokens(path, texts: list[str], add_bos: bool) -> list[list[int]]:
    llm = llama_cpp.load(path, context=256)
    try:
        return [list(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)) for text in texts]
    finally:
        llm.close()


@pytest.mark.parametrize("name", ["gemma2", "mistral", "phi3"])
def test_llama_cpp_splits_text_as_the_tokenizer_and_sentencepiece_do(name, tmp_path):
    """The GGUF written with the family's tokenizer.model (its pieces' own scores) is split by llama.cpp exactly as
    transformers' tokenizer and SentencePiece itself split it, byte fallback included."""
    folder = make_family_model(BY_NAME[name], tmp_path / name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    spm = model_file(str(folder), "tokenizer.model")
    assert spm is not None
    write_gguf(model, tokenizer, tmp_path / "model.gguf", "f32", "spm", spm)
    theirs = _llama_cpp_tokens(tmp_path / "model.gguf", TEXTS, add_bos=False)
    reference = sentencepiece.SentencePieceProcessor(model_proto=sentencepiece_model(BY_NAME[name]))
    for text, ids in zip(TEXTS, theirs, strict=True):
        assert ids == tokenizer(text, add_special_tokens=False).input_ids, text
        assert ids == reference.encode(text), text
    assert any(tokenizer.convert_ids_to_tokens(i).startswith("<0x") for i in theirs[2])  # byte fallback was used


def test_a_llama_2_folder_keeps_its_pieces_scores_and_bos(tmp_path):
    """A Llama 2 style folder whose tokenizer is tokenizer.model (transformers converts it; bos added): the
    GGUF carries SentencePiece's own scores and token types, says bos is added, and llama.cpp's tokens (bos
    included) are the tokenizer's for every text."""
    folder = tmp_path / "llama2"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(sentencepiece_model(BY_NAME["mistral"]))  # <unk> <s> </s>, prepended
    tokenizer = LlamaTokenizer.from_pretrained(folder, add_bos_token=True)  # as Llama 2's tokenizer_config.json
    assert tokenizer("a").input_ids[0] == tokenizer.bos_token_id
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1)
    config.num_attention_heads, config.num_key_value_heads = 4, 2
    torch.manual_seed(0)
    write_gguf(LlamaForCausalLM(config), tokenizer, tmp_path / "l2.gguf", "f32", "l2", folder / "tokenizer.model")
    reader = gguf.GGUFReader(tmp_path / "l2.gguf")
    processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    scores = reader.fields["tokenizer.ggml.scores"]
    written = [float(scores.parts[i][0]) for i in scores.data]
    assert written == pytest.approx([processor.GetScore(i) for i in range(processor.vocab_size())])
    types = reader.fields["tokenizer.ggml.token_type"]
    kinds = [int(types.parts[i][0]) for i in types.data]
    assert kinds[:3] == [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    assert kinds[3:259] == [gguf.TokenType.BYTE] * 256
    assert bool(reader.fields["tokenizer.ggml.add_bos_token"].parts[-1][0])
    plain = [text for text in TEXTS if not text.startswith(" ")]
    theirs = _llama_cpp_tokens(tmp_path / "l2.gguf", plain, add_bos=True)
    for text, ids in zip(plain, theirs, strict=True):
        assert ids == tokenizer(text).input_ids, text


def test_without_tokenizer_model_pieces_are_scored_by_rank_and_split_the_same(tmp_path):
    """A folder with tokenizer.json alone (the model file removed): pieces are scored by their rank, which for a
    vocabulary converted from SentencePiece is the order of its scores, so llama.cpp splits every text the same."""
    folder = make_family_model(BY_NAME["mistral"], tmp_path / "mistral")
    (folder / "tokenizer.model").unlink()
    assert model_file(str(folder), "tokenizer.model") is None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    write_gguf(AutoModelForCausalLM.from_pretrained(folder), tokenizer, tmp_path / "m.gguf", "f32", "m")
    theirs = _llama_cpp_tokens(tmp_path / "m.gguf", TEXTS, add_bos=False)
    assert theirs == [tokenizer(text, add_special_tokens=False).input_ids for text in TEXTS]


@pytest.mark.parametrize(("name", "title"), [("phi3", "tuned"), ("mistral", "phi3-tuned")])
def test_llama_cpp_strips_after_special_tokens_exactly_where_the_tokenizer_does(name, title, tmp_path):
    """llama.cpp makes Phi-3's chat tokens swallow the whitespace after them by the file's name alone: a Phi-3 run
    named anything, and a Mistral run named "phi3-...", are both tokenised by llama.cpp as by their tokenizer."""
    folder = make_family_model(BY_NAME[name], tmp_path / name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    write_gguf(AutoModelForCausalLM.from_pretrained(folder), tokenizer, tmp_path / "m.gguf", "f32", title)
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 7 + 7?"}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    llm = llama_cpp.load(tmp_path / "m.gguf", context=256)
    try:
        theirs = list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
    finally:
        llm.close()
    assert theirs == tokenizer(text, add_special_tokens=False).input_ids
