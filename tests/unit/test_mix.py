"""Data mixing: sources and their weights, each epoch's share of each source, and a mix through a run's data."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import chat, prose, write_jsonl
from tunesmith.config import RunConfig, build_config, merge_settings
from tunesmith.errors import ConfigError
from tunesmith.tokenize.mix import Mix, shares
from tunesmith.training.objectives import load_run_data
from tunesmith.training.plan import resolve_plan


def test_a_source_is_a_path_with_an_optional_weight_and_objective():
    weighted = build_config({"data": ["qa.jsonl:3", "docs/notes.jsonl:0.5@text", "c:/x.jsonl:1"]})
    got = [(s.path, s.weight, s.objective) for s in weighted.data]
    assert got == [("qa.jsonl", 3.0, None), ("docs/notes.jsonl", 0.5, "text"), ("c:/x.jsonl", 1.0, None)]
    plain = build_config({"data": ["c:/x.jsonl", "org/set@sft", "a@b.jsonl"]})
    assert [(s.path, s.weight, s.objective) for s in plain.data] == [
        ("c:/x.jsonl", None, None),
        ("org/set", None, "sft"),
        ("a@b.jsonl", None, None),
    ]


def test_one_plain_source_is_written_as_before_so_old_runs_keep_their_digest():
    assert RunConfig(data="x.jsonl").model_dump(mode="json")["data"] == "x.jsonl"
    assert build_config({"data": ["x.jsonl"]}).digest() == RunConfig(data="x.jsonl").digest()
    mixed = build_config({"datasets": [{"path": "a.jsonl", "weight": 2}, "b.jsonl:1@text"]})
    again = build_config(mixed.model_dump(mode="json"))
    assert again == mixed and again.digest() == mixed.digest()


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"data": ["a.jsonl:1", "b.jsonl"]}, "field data: b.jsonl has no weight while other sources have one"),
        ({"data": ["a.jsonl@dpo"]}, "a source's objective is one of sft, text, not dpo"),
        ({"data": ["a.jsonl:-2"]}, "field data.0.weight: Input should be greater than 0"),
        ({"data": "a.jsonl", "datasets": ["b.jsonl"]}, "both data and datasets are given"),
    ],
)
def test_a_bad_mix_is_one_line_naming_the_field(values, says):
    with pytest.raises(ConfigError) as caught:
        build_config(values)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_data_on_the_command_line_replaces_the_files_datasets():
    merged = merge_settings({"datasets": ["a.jsonl", "b.jsonl"], "epochs": 2}, {"data": ["c.jsonl"]})
    assert build_config(merged).data[0].path == "c.jsonl" and len(build_config(merged).data) == 1


@given(
    st.lists(st.integers(1, 300), min_size=1, max_size=5),
    st.lists(st.floats(0.01, 100), min_size=5, max_size=5),
)
def test_shares_add_up_to_the_pool_and_follow_the_weights(sizes, weights):
    weights = weights[: len(sizes)]
    got = shares(sizes, weights)
    total = sum(sizes)
    exact = [w / sum(weights) * total for w in weights]
    assert all(abs(g - e) < 1 or (g == 1 and e < 1) for g, e in zip(got, exact, strict=True))
    assert sum(got) - total <= sum(1 for e in exact if e < 1)  # only the at-least-one rule adds examples
    assert shares(sizes, None) == tuple(sizes)


def test_each_epoch_draws_each_sources_share_and_a_small_share_walks_through_its_source():
    mix = Mix(sizes=(10, 30), per_epoch=(4, 36))  # source 0 under-drawn, source 1 drawn 1.2 times a pass
    so_far: Counter[int] = Counter()
    for epoch in range(6):
        picked = mix.epoch(seed=3, epoch=epoch).tolist()
        assert Counter(int(i >= 10) for i in picked) == {0: 4, 1: 36}
        so_far.update(picked)
        for source in (range(10), range(10, 40)):  # no example drawn twice more than another, epoch after epoch
            counts = [so_far[i] for i in source]
            assert max(counts) - min(counts) <= 1
    assert all(so_far[i] >= 2 for i in range(10))  # 6 epochs x 4 walk through the small source 2.4 times
    assert np.array_equal(mix.epoch(3, 4), mix.epoch(3, 4)) and not np.array_equal(mix.epoch(3, 4), mix.epoch(4, 4))


def test_without_weights_an_epoch_is_every_example_once():
    mix = Mix(sizes=(5, 7), per_epoch=(5, 7))
    assert mix.whole and mix.epoch(0, 2).tolist() == list(range(12))


@pytest.fixture
def two_sources(tmp_path):
    qa = write_jsonl(tmp_path / "qa.jsonl", [chat(i) for i in range(60)])
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": prose(60, seed=i)} for i in range(30)])
    return qa, docs


def test_a_run_draws_its_mix_every_epoch_and_reports_it_in_tokens(two_sources, tokenizer):
    qa, docs = two_sources
    config = build_config({"data": [f"{qa}:1", f"{docs}:3@text"], "epochs": 3, "batch_tokens": 256, "seed": 5})
    data = load_run_data(config, tokenizer)
    assert data.mix is not None and data.mix.sizes == (54, 27)  # 10% of each source held out
    assert data.mix.per_epoch == (20, 61)
    assert all(e.supervised >= len(e.input_ids) - 1 for e in data.train[54:])  # text: every token learned
    assert all(e.supervised < len(e.input_ids) - 1 for e in data.train[:54])  # sft: the answers only
    lengths = np.array([len(e.input_ids) for e in data.train])
    _, plan = resolve_plan(config, lengths, np.array([len(e.input_ids) for e in data.held_out]), data.mix)
    for epoch in range(3):
        drawn = [i for e, window in plan.windows if e == epoch for batch in window for i in batch]
        assert Counter(int(i >= 54) for i in drawn) == {0: 20, 1: 61}
    rows = {row["source"]: row for row in data.report["mix"]}
    assert rows[str(docs)]["objective"] == "text" and rows[str(qa)]["examples_per_epoch"] == 20
    assert sum(row["token_share"] for row in rows.values()) == pytest.approx(100, abs=0.2)
    assert [s["examples"] for s in data.report["held_out"]["sources"]] == [6, 3]
    assert data.report["held_out"]["source"] == str(qa) and len(data.held_out) == 9


def test_a_mix_with_dpo_or_sft_on_plain_text_stops_with_one_line(two_sources, tokenizer):
    qa, docs = two_sources
    with pytest.raises(ConfigError, match="objective dpo trains on one source"):
        load_run_data(build_config({"data": [str(qa), str(docs)], "objective": "dpo"}), tokenizer)
    with pytest.raises(ConfigError, match=r"docs.jsonl: plain text has no answers .* objective sft"):
        load_run_data(build_config({"data": [str(qa), str(docs)]}), tokenizer)
