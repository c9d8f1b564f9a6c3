"""Exactly the tokens to learn from: golden supervised tokens for ChatML and Llama-3, and properties."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.data.schema import Conversation, Message, PreferencePair, TextDoc
from tunesmith.tokenize.encode import IGNORE, encode
from tunesmith.tokenize.render import ChatRenderer

CONVERSATION = Conversation(
    (
        Message("user", "Hello"),
        Message("assistant", "Hi there!"),
        Message("user", "ok"),
        Message("assistant", "Bye!"),
    )
)


def trained_text(tokenizer, record, **options) -> str:
    example = encode([(1, record)], tokenizer, max_length=options.pop("max_length", 512), **options).examples[0]
    return tokenizer.decode([i for i, label in zip(example.input_ids, example.labels) if label != IGNORE])


def test_only_assistant_turns_and_end_token_are_trained(tokenizer):
    assert trained_text(tokenizer, CONVERSATION) == "Hi there!<|im_end|>Bye!<|im_end|>"


def test_end_token_trained_although_pad_is_eos(tokenizer):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    example = encode([(1, CONVERSATION)], tokenizer, max_length=512).examples[0]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    trained_ends = [i for i, label in zip(example.input_ids, example.labels) if label == end]
    assert len(trained_ends) == 2


def test_ids_are_the_model_template_tokenized(tokenizer):
    example = encode([(1, CONVERSATION)], tokenizer, max_length=512).examples[0]
    reference = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in CONVERSATION.messages], tokenize=False
    )
    assert example.input_ids.tolist() == tokenizer(reference, add_special_tokens=False)["input_ids"]


def test_llama3_template_golden_and_single_bos(llama3_tokenizer):
    assert trained_text(llama3_tokenizer, CONVERSATION) == "Hi there!<|eot_id|>Bye!<|eot_id|>"
    example = encode([(1, CONVERSATION)], llama3_tokenizer, max_length=512).examples[0]
    bos = llama3_tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert example.input_ids.tolist().count(bos) == 1 and example.input_ids[0] == bos


def test_trimming_template_is_detected_and_stays_exact(llama3_tokenizer):
    padded = Conversation((Message("user", "  Hello  "), Message("assistant", "  Hi there!\n")))
    renderer = ChatRenderer(llama3_tokenizer)
    assert renderer.glue is not None and renderer.glue.strips
    assert renderer.render(padded) == renderer._exact(padded.messages)
    assert trained_text(llama3_tokenizer, padded) == "Hi there!<|eot_id|>"


def test_weight_zero_and_last_and_all(tokenizer):
    weighted = Conversation(
        (
            Message("user", "Hello"),
            Message("assistant", "Hi there!", 0),
            Message("user", "ok"),
            Message("assistant", "Bye!", 1),
        )
    )
    assert trained_text(tokenizer, weighted) == "Bye!<|im_end|>"
    assert trained_text(tokenizer, CONVERSATION, supervise="last") == "Bye!<|im_end|>"
    everything = trained_text(tokenizer, CONVERSATION, supervise="all")
    assert everything.startswith("<|im_start|>system") and everything.endswith("Bye!<|im_end|>\n")


def test_position_dependent_template_falls_back_to_jinja(tokenizer):
    tok = copy.deepcopy(tokenizer)
    # Turns are numbered: the text between two roles depends on the position, so Jinja must be used.
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ loop.index }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    renderer = ChatRenderer(tok)
    assert renderer.glue is None
    assert trained_text(tok, CONVERSATION) == "Hi there!<|im_end|>Bye!<|im_end|>"


def test_too_long_keeps_whole_answers_or_leaves_out(tokenizer):
    long_tail = Conversation((*CONVERSATION.messages, Message("user", "more " * 200), Message("assistant", "x " * 200)))
    full = encode([(1, long_tail)], tokenizer, max_length=4096).examples[0]
    cut = encode([(1, long_tail)], tokenizer, max_length=len(full.input_ids) - 5)
    assert cut.truncated == [(1, len(full.input_ids))]
    assert trained_text(tokenizer, long_tail, max_length=len(full.input_ids) - 5) == "Hi there!<|im_end|>Bye!<|im_end|>"
    one_long_answer = Conversation((Message("user", "q"), Message("assistant", "word " * 300)))
    out = encode([(7, one_long_answer)], tokenizer, max_length=64)
    assert out.examples == [] and out.dropped[0][0] == 7


def test_nothing_to_learn_is_left_out(tokenizer):
    silent = Conversation((Message("user", "q"), Message("assistant", "a", 0)))
    out = encode([(3, silent)], tokenizer, max_length=512)
    assert out.examples == [] and out.dropped[0][0] == 3


def test_text_documents_become_windows_all_trained(tokenizer):
    doc = TextDoc("The patient presented with acute symptoms. " * 40)
    out = encode([(1, doc)], tokenizer, max_length=64)
    assert len(out.examples) > 3
    assert all(len(e.input_ids) <= 64 and (e.labels == e.input_ids).all() for e in out.examples)
    assert out.examples[-1].input_ids[-1] == tokenizer.eos_token_id


def test_preference_pair_trains_on_chosen(tokenizer):
    pair = PreferencePair((Message("user", "Q?"),), "Good.", "Bad.")
    assert trained_text(tokenizer, pair) == "Good.<|im_end|>"


# Contents the tokenizer round-trips (its byte-level vocabulary lacks some rare code points), without edge spaces.
CHARS = st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc"))
TEXT = st.text(CHARS, min_size=1, max_size=40).map(str.strip).filter(bool)


@st.composite
def conversations(draw):
    turns = draw(st.integers(1, 3))
    messages = [Message("system", draw(TEXT))] if draw(st.booleans()) else []
    for _ in range(turns):
        messages += [Message("user", draw(TEXT)), Message("assistant", draw(TEXT), draw(st.sampled_from([None, 0, 1])))]
    return Conversation(tuple(messages))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conversations())
def test_fast_rendering_equals_the_template(tokenizer, conversation):
    renderer = ChatRenderer(tokenizer)
    assert renderer.render(conversation) == renderer._exact(conversation.messages)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conversations())
def test_only_assistant_contents_and_their_end_token_are_trained(tokenizer, conversation):
    out = encode([(1, conversation)], tokenizer, max_length=4096)
    expected = "".join(
        m.content + "<|im_end|>" for m in conversation.messages if m.role == "assistant" and m.weight != 0
    )
    if not expected:
        assert out.examples == []
        return
    example = out.examples[0]
    assert len(example.labels) == len(example.input_ids)
    trained = tokenizer.decode([i for i, label in zip(example.input_ids, example.labels) if label != IGNORE])
    assert trained == expected


def test_a_padded_call_of_the_tokenizer_leaves_later_encodes_and_its_digest_alone(tokenizer):
    """Generation pads its batches on the left through the tokenizer, which leaves padding switched on in the
    backend it shares; encoding after that must give the same ids as before (held-out scores were shifted by it)."""
    from tunesmith.training.manifest import tokenizer_digest

    own = copy.deepcopy(tokenizer)
    records = [
        (0, Conversation((Message("user", "Hi"), Message("assistant", "Hello there, my friend.")))),
        (
            1,
            Conversation(
                (Message("user", "A far longer question, about many more things?"), Message("assistant", "Yes."))
            ),
        ),
    ]
    before, digest = encode(records, own, max_length=512).examples, tokenizer_digest(own)
    own.padding_side = "left"
    own(["a", "a text longer than the first by far"], padding=True)
    after = encode(records, own, max_length=512).examples
    assert len(before[0].input_ids) != len(before[1].input_ids)
    assert [e.input_ids.tolist() for e in after] == [e.input_ids.tolist() for e in before]
    assert [e.labels.tolist() for e in after] == [e.labels.tolist() for e in before]
    assert tokenizer_digest(own) == digest
