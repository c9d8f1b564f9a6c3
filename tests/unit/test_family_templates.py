"""Each family's real chat template (tests/families/): the rendered conversation and the tokens trained, golden.

What is trained is every assistant answer from where the generation prompt ends through the token that closes the
turn (Qwen3's empty think block on the final answer and Mistral's leading space included, as the model must write
them), and nothing of the prompt. Gemma 2's template refuses a system message: it is merged into the first user
turn, as Gemma 3's own template does.
"""

from __future__ import annotations

import time

import pytest

from tests.families import BY_NAME, FAMILIES, family_tokenizer
from tunesmith.data.schema import Conversation, Message, as_dicts
from tunesmith.tokenize.encode import IGNORE, encode
from tunesmith.tokenize.render import ChatRenderer, merge_system

CONVERSATION = Conversation(
    (
        Message("system", "Be brief."),
        Message("user", "Hello"),
        Message("assistant", "Hi there!"),
        Message("user", "ok"),
        Message("assistant", "Bye!"),
    )
)
CHATML = "<|im_start|>{}\n{}<|im_end|>\n"
GEMMA = "<bos><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n"
GEMMA += "<start_of_turn>user\nok<end_of_turn>\n<start_of_turn>model\nBye!<end_of_turn>\n"
LLAMA3 = "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>"


def _llama3(date: str) -> str:
    system = f"Cutting Knowledge Date: December 2023\nToday Date: {date}\n\nBe brief."
    turns = [("system", system), ("user", "Hello"), ("assistant", "Hi there!"), ("user", "ok"), ("assistant", "Bye!")]
    return "<|begin_of_text|>" + "".join(LLAMA3.format(*turn) for turn in turns)


RENDERED = {
    "qwen2.5": "".join(
        CHATML.format(*t)
        for t in [("system", "Be brief."), ("user", "Hello"), ("assistant", "Hi there!"), ("user", "ok")]
    )
    + CHATML.format("assistant", "Bye!"),
    "qwen3": "".join(
        CHATML.format(*t)
        for t in [("system", "Be brief."), ("user", "Hello"), ("assistant", "Hi there!"), ("user", "ok")]
    )
    + CHATML.format("assistant", "<think>\n\n</think>\n\nBye!"),
    "gemma2": GEMMA,
    "gemma3": GEMMA,
    "mistral": "<s> [INST] Be brief.\n\nHello [/INST] Hi there!</s> [INST] ok [/INST] Bye!</s>",
    "phi3": "<|system|>\nBe brief.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there!<|end|>\n"
    "<|user|>\nok<|end|>\n<|assistant|>\nBye!<|end|>\n<|endoftext|>",
}
TRAINED = {
    "llama3": "Hi there!<|eot_id|>Bye!<|eot_id|>",
    "qwen2.5": "Hi there!<|im_end|>Bye!<|im_end|>",
    "qwen3": "Hi there!<|im_end|><think>\n\n</think>\n\nBye!<|im_end|>",
    "gemma2": "Hi there!<end_of_turn>Bye!<end_of_turn>",
    "gemma3": "Hi there!<end_of_turn>Bye!<end_of_turn>",
    "mistral": "Hi there!</s> Bye!</s>",  # " Hi there!" trained: SentencePiece's decoder drops the first space
    # Phi-3's chat tokens swallow the newline after them, so each answer starts with SentencePiece's "▁"
    "phi3": "Hi there!<|end|> Bye!<|end|>",
}
PARAMS = [pytest.param(family, id=family.name) for family in FAMILIES]


@pytest.fixture(scope="module")
def tokenizers():
    return {family.name: family_tokenizer(family) for family in FAMILIES}


@pytest.mark.parametrize("family", PARAMS)
def test_rendering_is_the_family_template_text(family, tokenizers):
    tokenizer = tokenizers[family.name]
    before = time.strftime("%d %b %Y")
    text = ChatRenderer(tokenizer).render(CONVERSATION).text
    expected = RENDERED.get(family.name) or _llama3(before)
    assert text == expected or (family.name == "llama3" and text == _llama3(time.strftime("%d %b %Y")))
    messages = merge_system(CONVERSATION.messages) if family.name == "gemma2" else CONVERSATION.messages
    assert text == tokenizer.apply_chat_template(as_dicts(messages), tokenize=False)


@pytest.mark.parametrize("family", PARAMS)
def test_exactly_the_answers_and_their_closing_token_are_trained(family, tokenizers):
    tokenizer = tokenizers[family.name]
    example = encode([(1, CONVERSATION)], tokenizer, max_length=512).examples[0]
    trained = [i for i, label in zip(example.input_ids, example.labels) if label != IGNORE]
    assert tokenizer.decode(trained) == TRAINED[family.name]
    closing = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    assert trained.count(closing) == 2  # the closing special token is one token, trained at each answer's end


@pytest.mark.parametrize("family", PARAMS)
def test_generation_stops_at_the_familys_end_of_turn_token(family, tokenizers):
    tokenizer = tokenizers[family.name]
    stops = ChatRenderer(tokenizer).stop_token_ids()
    assert tokenizer.convert_tokens_to_ids(family.end_of_turn) in stops and tokenizer.eos_token_id in stops


def test_a_template_that_refuses_system_gets_it_merged_into_the_first_user_turn(tokenizers):
    renderer = ChatRenderer(tokenizers["gemma2"])
    assert renderer.merges_system and not ChatRenderer(tokenizers["gemma3"]).merges_system
    prompt = renderer.prompt((Message("system", "Be brief."), Message("user", "Hello")))
    assert prompt == "<bos><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n<start_of_turn>model\n"


def test_qwen3_prompts_end_as_the_family_expects_with_thinking_on_or_off(tokenizers):
    renderer = ChatRenderer(tokenizers["qwen3"])
    messages = (Message("user", "Hello"),)
    assert renderer.prompt(messages) == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    off = renderer.prompt(messages, {"enable_thinking": False})
    assert off == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert BY_NAME["qwen3"].extra_tokens == ("<think>", "</think>")


def test_an_empty_think_block_is_not_part_of_a_scored_answer():
    from tunesmith.evaluate.generate import without_empty_thinking

    assert without_empty_thinking("<think>\n\n</think>\n\nThe answer is alpha.") == "The answer is alpha."
    kept = "<think>\nadd them\n</think>\n\n4"  # a real reasoning block is the model's to show
    assert without_empty_thinking(kept) == kept and without_empty_thinking("plain") == "plain"
