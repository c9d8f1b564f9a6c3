"""Evaluation on tiny models: the tuned model wins, the report renders, the forgetting guard, batched generation."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import write_jsonl
from tests.integration.test_train import FIXED, _config, _fixed_answers
from tunesmith.cli import app
from tunesmith.data.validate import read_dataset
from tunesmith.engine.sampling import Sampling
from tunesmith.errors import ConfigError
from tunesmith.evaluate import evaluation as eval_run
from tunesmith.evaluate import report as report_module
from tunesmith.evaluate.evaluation import EvalOptions, evaluate
from tunesmith.evaluate.generate import load_generator
from tunesmith.evaluate.items import GENERAL_QUESTIONS, items_of
from tunesmith.evaluate.report import evaluate_to_folder
from tunesmith.training.runner import train


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.ids: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        if "id" in attributes:
            self._open = attributes["id"]

    def handle_data(self, data):
        if self._open:
            self.ids[self._open] = self.ids.get(self._open, "") + data

    def handle_endtag(self, tag):
        self._open = None


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory, tiny_model):
    """A tiny model fully tuned to give one fixed answer, with held-out questions it never saw."""
    root = tmp_path_factory.mktemp("fixed")
    data = _fixed_answers(root / "train.jsonl", n=40)
    held = write_jsonl(
        root / "eval.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"Held-out question {i}?"},
                    {"role": "assistant", "content": FIXED},
                ]
            }
            for i in range(12)
        ],
    )
    config = _config(data, tiny_model, method="full", epochs=40, max_steps=80, learning_rate=5e-3, eval_every=100)
    train(config.model_copy(update={"eval_data": str(held)}), root / "run")
    return root / "run"


def test_the_tuned_model_wins_and_the_report_says_so(fixed_run):
    _, html = evaluate_to_folder(str(fixed_run), EvalOptions(max_new_tokens=16, guard=False))
    report = json.loads((fixed_run / "eval" / "report.json").read_text())
    assert report["primary_metric"] == "exact_match"
    assert report["comparison"] == {"wins": 12, "ties": 0, "losses": 0}
    assert report["tuned"]["metrics"]["exact_match"] == 100.0 and report["baseline"]["metrics"]["exact_match"] == 0.0
    assert report["tuned"]["loss"] < report["baseline"]["loss"] and report["tuned"]["stop_rate"] == 100.0
    assert report["headline"] == "exact_match 0.0 -> 100.0 on 12 held-out examples (+100.0; 12 wins, 0 ties, 0 losses)"

    page = _Page()
    page.feed(html.read_text())
    assert page.ids["headline"] == report["headline"]
    assert len(page.images) == 3 and all(src.startswith("data:image/png;base64,") for src in page.images)
    text = html.read_text()
    assert f"{report['tuned']['loss']:.3f}" in text and f"{report['baseline']['loss']:.3f}" in text
    assert "http://" not in text and "https://" not in text  # opens offline
    rows = [json.loads(line) for line in (fixed_run / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["winner"] == "tuned" and r["tuned"] == FIXED for r in rows)


def test_the_held_out_losses_the_run_measured_are_reused_unless_the_data_differs(fixed_run, monkeypatch):
    computed: list[float] = []
    original = eval_run._loss
    monkeypatch.setattr(eval_run, "_loss", lambda *args: computed.append(original(*args)) or computed[-1])
    evals = [json.loads(x) for x in (fixed_run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    measured = evaluate(str(fixed_run), EvalOptions(max_new_tokens=2, guard=False))
    assert (measured.baseline.loss, measured.tuned.loss) == (evals[0]["eval_loss"], evals[-1]["eval_loss"])
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 80 and computed == []
    held = yaml.safe_load((fixed_run / "config.yaml").read_text())["eval_data"]
    for options in (EvalOptions(data=held, max_new_tokens=2, guard=False), EvalOptions(limit=5, guard=False)):
        again = evaluate(str(fixed_run), options)  # other data, or a part of it: computed here
        assert computed[-2:] == [again.tuned.loss, again.baseline.loss] and again.tuned.loss < again.baseline.loss


def test_batched_greedy_answers_equal_one_by_one(fixed_run, tiny_model):
    # In float64 (its norms in float32), batching moves a logit by about 1e-7 relative at most (tests/numerics.py);
    # the top two of a random model's 49k logits are that close with a chance of about 1e-5 per token.
    generator = load_generator(str(tiny_model), dtype="float64")
    prompts = [i.prompt for i in items_of(read_dataset(str(GENERAL_QUESTIONS)).records)[:12]]
    sampling = Sampling(max_tokens=12)
    batched = generator.generate(prompts, sampling, batch_size=8)
    single = [generator.generate([p], sampling, batch_size=1)[0] for p in prompts]
    assert [a.text for a in batched] == [a.text for a in single]
    assert all(a.tokens == 12 and not a.stopped for a in batched)  # a random model never says <|im_end|>
    caps = [3 + i % 4 for i in range(len(prompts))]  # each answer cut at its own length, batched by length
    capped = generator.generate(prompts, sampling, batch_size=8, limits=caps)
    assert [a.tokens for a in capped] == caps
    assert all(single[i].text.startswith(capped[i].text) for i in range(len(prompts)))


def test_forgetting_guard_warns_on_a_broken_model(tmp_path, tiny_model):
    """A model taught the general questions, against a broken one (the untrained random model)."""
    config = _config(GENERAL_QUESTIONS, tiny_model, method="full", epochs=200, max_steps=200, learning_rate=3e-3)
    config = config.model_copy(update={"eval_data": str(GENERAL_QUESTIONS), "eval_every": 1000})
    train(config, tmp_path / "knows")
    options = EvalOptions(data=str(GENERAL_QUESTIONS), baseline=str(tmp_path / "knows"), max_new_tokens=8, limit=5)
    evaluation, _ = evaluate_to_folder(str(tiny_model), options, tmp_path / "report")
    assert evaluation.baseline.guard > 30 and evaluation.tuned.guard == 0
    warning = evaluation.guard_warning()
    assert warning and warning.startswith(f"general questions: {evaluation.baseline.guard:.0f}% -> 0% right")
    assert json.loads((tmp_path / "report" / "report.json").read_text())["forgetting"]["warning"] == warning


def test_cli_eval_on_a_plain_model_and_compare_reads_the_samples(tmp_path, tiny_model, fixed_run):
    data = _fixed_answers(tmp_path / "eval.jsonl", n=6)
    result = CliRunner().invoke(
        app,
        ["eval", str(tiny_model), "--data", str(data), "--max-tokens", "4", "--no-guard", "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 0, result.output
    assert "exact_match 0.0 on 6 held-out examples" in result.output and (tmp_path / "r" / "report.html").is_file()
    missing = CliRunner().invoke(app, ["eval", str(tiny_model)])
    assert missing.exit_code == 2 and "needs --data" in missing.output
    evaluate_to_folder(str(fixed_run), EvalOptions(max_new_tokens=16, guard=False, limit=3))
    shown = CliRunner().invoke(app, ["compare", str(fixed_run), "-n", "2"])
    assert shown.exit_code == 0 and shown.output.count("held-out example") == 2


def test_plain_text_runs_are_scored_by_perplexity_and_style_of_continuations(tmp_path, tiny_model):
    text = "The tenant pays the rent on the first day of each month, by bank transfer, to the landlord's account."
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": f"Clause {i}. {text}"} for i in range(30)])
    train(_config(docs, tiny_model, objective="text", max_steps=3), tmp_path / "run")
    evaluation, html = evaluate_to_folder(str(tmp_path / "run"), EvalOptions(max_new_tokens=8, guard=False))
    assert evaluation.held_out.kind == "text" and evaluation.metrics[:2] == ["style", "chrf"]
    assert len(evaluation.held_out.items) == 3  # 10% of 30 held out; prompt = first half of each
    assert evaluation.held_out.items[0].prompt[0].content.startswith("Clause")
    assert evaluation.headline().startswith("perplexity ") and "style similarity" in evaluation.headline()
    assert all(a.tokens <= 8 for a in evaluation.tuned.answers) and html.is_file()


def test_ctrl_c_while_writing_a_report_keeps_the_previous_report_whole(fixed_run, tmp_path, monkeypatch):
    out = tmp_path / "report"
    evaluate_to_folder(str(fixed_run), EvalOptions(max_new_tokens=2, guard=False, limit=3), out)
    before = {p.name: p.read_text() for p in out.iterdir()}
    written = []

    def interrupted(path, text):
        written.append(path.name)
        if len(written) == 2:
            raise KeyboardInterrupt
        path.write_text(text)

    monkeypatch.setattr(report_module.paths, "write_text_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_to_folder(str(fixed_run), EvalOptions(max_new_tokens=3, guard=False, limit=4), out)
    assert written == ["report.json", "samples.jsonl"]
    assert {p.name: p.read_text() for p in out.iterdir()} == before and [p.name for p in tmp_path.iterdir()] == [
        "report"
    ]


def _mean_answer_log_prob(model, tokenizer, prompt: str, answer: str) -> float:
    """One conversation at a time, the whole sequence through the model: the reference for the batched scoring."""
    import torch

    from tunesmith.data.schema import Conversation, Message
    from tunesmith.tokenize.encode import encode

    record = Conversation((Message("user", prompt), Message("assistant", answer)))
    example = encode([(0, record)], tokenizer, max_length=512).examples[0]
    ids = torch.tensor(example.input_ids, dtype=torch.long)[None]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    labels = torch.tensor(example.labels[1:], dtype=torch.long)
    learned = labels != -100
    return float(log_probs[learned].gather(1, labels[learned][:, None]).mean())


def test_choice_picks_the_answer_likeliest_per_token_as_one_by_one_scoring_does(fixed_run, tmp_path):
    from tunesmith.evaluate.choice import choice_scores, distractors

    answers = [FIXED, "Paris is in France.", "Seven days make a week.", "Water boils at 100 C.", "No.", "Blue."]
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": a}]}
        for i, a in enumerate(answers)
    ]
    items = items_of(read_dataset(str(write_jsonl(tmp_path / "q.jsonl", rows))).records)
    generator = load_generator(str(fixed_run), dtype="float32")
    scores = choice_scores(generator.model, generator.tokenizer, items, max_length=512)
    leads = []  # the own answer's lead over the best distractor, in mean log-prob per token
    for item, picked in zip(items, distractors(items)):
        mean = [
            _mean_answer_log_prob(generator.model, generator.tokenizer, item.prompt[0].content, a)
            for a in [item.reference, *(items[j].reference for j in picked)]
        ]
        leads.append(mean[0] - max(mean[1:]))
    # float32 batched and one-by-one sums of a few dozen log-probs of size ~10 agree to ~1e-5: leads beyond 1e-3
    # decide alike (near-ties may not; there are none here)
    assert all(abs(lead) > 1e-3 for lead in leads) and 0 < sum(lead > 0 for lead in leads) < len(leads)
    assert scores == [100.0 if lead > 0 else 0.0 for lead in leads] and scores[0] == 100.0  # its tuned answer wins
    evaluation = evaluate(
        str(fixed_run), EvalOptions(data=str(tmp_path / "q.jsonl"), metrics=("choice",), max_new_tokens=2, guard=False)
    )
    assert evaluation.tuned.scores["choice"] == scores and evaluation.headline().startswith("choice accuracy (%) ")
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "a plain text"}] * 3)
    with pytest.raises(ConfigError, match=r"docs\.jsonl: metric 'choice' needs questions with answers"):
        evaluate(str(fixed_run), EvalOptions(data=str(docs), metrics=("choice",), guard=False))
