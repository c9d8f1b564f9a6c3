"""OpenAI's graders run here: every type, templates, the python sandbox's limits and the formula parser."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tunesmith.graders.formula import Formula, FormulaError
from tunesmith.graders.judge import Endpoint
from tunesmith.graders.run import Runner
from tunesmith.graders.sandbox import Limits, PythonSandbox, network_isolated
from tunesmith.graders.similarity import similarity
from tunesmith.graders.spec import SIMILARITY_METRICS, GraderError, read_grader
from tunesmith.graders.template import Sample, render

ITEM = {"answer": "cp", "meta": {"tags": ["shell", "files"]}}


def string_check(operation: str, reference: str = "{{item.answer}}") -> dict:
    return {"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": reference,
            "operation": operation}  # fmt: skip


def grade(grader: dict, text: str, item: dict | None = None, **runner) -> float:
    r = Runner(read_grader(grader), **runner)
    try:
        return r.grade(Sample(text), item if item is not None else ITEM).score
    finally:
        r.close()


def test_templates_fill_item_paths_sample_text_and_json():
    sample = Sample('{"command": "cp", "n": 2}')
    assert render("{{ item.answer }}/{{item.meta.tags[1]}}/{{item.meta.tags}}", sample, ITEM) == (
        'cp/files/["shell", "files"]'
    )
    assert render("{{sample.output_json.command}} {{sample.output_json.n}} {{item.missing.x}}.", sample, ITEM) == (
        "cp 2 ."
    )
    assert render("{{sample.output_json}}", Sample("not json"), {}) == ""


@pytest.mark.parametrize(
    ("operation", "text", "expected"),
    [("eq", "cp", 1), ("eq", "cp ", 0), ("ne", "mv", 1), ("like", "use cp here", 1), ("like", "use CP", 0),
     ("ilike", "use CP", 1), ("ilike", "mv", 0)],
)  # fmt: skip
def test_string_check_operations(operation, text, expected):
    assert grade(string_check(operation), text) == expected


def test_text_similarity_metrics_are_the_libraries_scores_in_0_1():
    text, reference = "the cat sat on a mat", "the cat sat on the mat"
    metrics = [m for m in SIMILARITY_METRICS if m != "cosine"]  # cosine: an embeddings endpoint (below)
    scores = {m: similarity(m, text, reference) for m in metrics}
    assert all(0 <= s < 1 for s in scores.values()), scores
    assert scores["rouge_1"] == pytest.approx(5 / 6)  # 5 of 6 unigrams shared each way
    assert scores["rouge_2"] == pytest.approx(3 / 5)  # the cat, cat sat, sat on
    assert scores["rouge_3"] == pytest.approx(2 / 4) and scores["rouge_4"] == pytest.approx(1 / 3)
    assert scores["rouge_5"] == 0  # no 5 words in a row shared
    assert all(similarity(m, reference, reference) == pytest.approx(1.0) for m in scores if m != "meteor")
    # METEOR's fragmentation penalty never vanishes: 0.5 x (1 chunk / 6 matches)^3
    assert similarity("meteor", reference, reference) == pytest.approx(1 - 0.5 / 6**3)
    assert similarity("bleu", "", "x") == 0.0 and similarity("gleu", "", "") == 1.0


class _Embeddings(BaseHTTPRequestHandler):
    """A fake embeddings endpoint: a text's vector counts its letters a, b and c."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = [{"object": "embedding", "index": i, "embedding": [t.count("a"), t.count("b"), t.count("c")]}
                for i, t in enumerate(body["input"])]  # fmt: skip
        payload = json.dumps({"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": 3, "total_tokens": 3}}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def test_cosine_asks_the_embeddings_endpoint_named():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Embeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = Endpoint(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="x", max_retries=0)
        grader = {"type": "text_similarity", "name": "c", "input": "{{sample.output_text}}",
                  "reference": "{{item.ref}}", "evaluation_metric": "cosine"}  # fmt: skip
        # (1, 1, 0) against (1, 0, 0): cos = 1 / sqrt(2)
        assert grade(grader, "ab", {"ref": "a"}, endpoint=endpoint) == pytest.approx(2**-0.5)
    finally:
        server.shutdown()


def python_grader(body: str) -> dict:
    return {"type": "python", "name": "p", "source": "def grade(sample, item):\n" + body}


def test_python_grader_reads_sample_and_item():
    grader = python_grader("    return 1.0 if sample['output_text'].strip() == item['answer'] else 0.25\n")
    assert grade(grader, " cp ") == 1.0
    assert grade(grader, "mv") == 0.25


def _outcome(body: str, seconds: float = 5.0) -> tuple[float, str]:
    sandbox = PythonSandbox(python_grader(body)["source"], Limits(seconds=seconds, memory_bytes=1024**3))
    try:
        outcome = sandbox.grade({"output_text": "x"}, {})
    finally:
        sandbox.close()
    return outcome.score, outcome.error or ""


def test_a_grader_that_raises_or_returns_no_number_scores_0_and_says_why():
    score, error = _outcome("    raise ValueError('bad input')\n")
    assert score == 0 and error.endswith("ValueError: bad input")
    score, error = _outcome("    return 'high'\n")
    assert score == 0 and "not a number" in error


def test_the_sandbox_stops_a_grader_past_its_time_and_the_next_call_works():
    sandbox = PythonSandbox("import time\ndef grade(sample, item):\n    if item.get('slow'):\n        time.sleep(60)\n"
                            "    return 1.0\n", Limits(seconds=1))  # fmt: skip
    try:
        slow = sandbox.grade({"output_text": ""}, {"slow": True})
        fast = sandbox.grade({"output_text": ""}, {})
    finally:
        sandbox.close()
    assert slow.score == 0 and slow.error == "timed out after 1 s"
    assert fast.score == 1.0 and fast.error is None


def test_the_sandbox_caps_memory():
    score, error = _outcome("    block = bytearray(4 * 1024**3)\n    return 1.0\n")
    assert score == 0 and "MemoryError" in error


@pytest.mark.parametrize(
    "body",
    [
        "    import socket\n    socket.create_connection(('127.0.0.1', PORT))\n    return 1.0\n",
        "    import urllib.request\n    urllib.request.urlopen('http://127.0.0.1:PORT/')\n    return 1.0\n",
        "    import subprocess\n    subprocess.run(['true'])\n    return 1.0\n",
        "    import os\n    os.system('true')\n    return 1.0\n",
        "    import ctypes\n    ctypes.CDLL(None)\n    return 1.0\n",
    ],
)
def test_the_sandbox_refuses_network_processes_and_native_code(body):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(0.5)
    try:
        score, error = _outcome(body.replace("PORT", str(port)))
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing connected
    finally:
        listener.close()
    assert score == 0 and "not allowed" in error, error


def test_the_sandbox_writes_only_inside_its_own_folder(tmp_path):
    outside = tmp_path / "written.txt"
    score, error = _outcome(f"    open({str(outside)!r}, 'w').write('x')\n    return 1.0\n")
    assert score == 0 and "may write only inside" in error and not outside.exists()
    score, _ = _outcome("    open('scratch.txt', 'w').write('x')\n    return len(open('scratch.txt').read())\n")
    assert score == 1.0


def test_network_namespace_where_the_machine_allows_one():
    if not network_isolated():
        pytest.skip("unshare is not allowed here: the audit hook alone refuses sockets")
    score, error = _outcome("    return float(len(open('/proc/net/dev').read().splitlines()) - 2)\n")
    assert score == 1.0, error  # the interfaces of its own namespace: loopback only


def test_multi_grader_combines_sub_graders_by_its_formula():
    grader = {
        "type": "multi", "name": "command",
        "graders": {
            "exact": string_check("eq"),
            "fuzzy": {"type": "text_similarity", "name": "fuzzy", "input": "{{sample.output_text}}",
                      "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"},
        },
        "calculate_output": "max(exact, 0.5 * fuzzy^2)",
    }  # fmt: skip
    runner = Runner(read_grader(grader))
    exact, near = runner.grade(Sample("cp"), ITEM), runner.grade(Sample("cpio"), ITEM)
    assert exact.score == 1.0 and exact.sub_scores == {"exact": 1.0, "fuzzy": 1.0}
    fuzzy = similarity("fuzzy_match", "cpio", "cp")
    assert near.sub_scores["exact"] == 0 and near.score == pytest.approx(0.5 * fuzzy**2)


@pytest.mark.parametrize(
    ("formula", "value"),
    [("2 + 3 * 4", 14), ("2 ^ 3 ^ 2", 512), ("-a + abs(-b)", 1), ("min(a, b, 0.5)", 0.5), ("floor(2.7) + ceil(0.2)", 3),
     ("sqrt(16) * log(exp(2))", 8), ("(a + b) / 2", 1.5)],
)  # fmt: skip
def test_formulas_compute_arithmetic_over_scores(formula, value):
    assert Formula.parse(formula, ("a", "b")).compute({"a": 1.0, "b": 2.0}) == pytest.approx(value)


@pytest.mark.parametrize(
    "formula",
    [
        "__import__('os').system('touch /tmp/pwned')",
        "a.__class__", "a[0]", "(lambda: 1)()", "'text'", "[a for a in b]", "open('x')", "eval('1')",
        "a if b else 1", "a < b", "a and b", "max", "c + 1", "max(a, key=b)", "a; b", "x := 1", "True + 1",
        "().__class__.__bases__[0]", "a" * 1001,
    ],
)  # fmt: skip
def test_the_formula_parser_refuses_anything_but_arithmetic(formula):
    with pytest.raises(FormulaError):
        Formula.parse(formula, ("a", "b"))


def test_formulas_that_overflow_or_divide_by_zero_fail_cleanly():
    for formula in ("a / (b - 2)", "10 ^ 10 ^ 10", "log(0 * a)", "sqrt(-a)"):
        with pytest.raises(FormulaError):
            Formula.parse(formula, ("a", "b")).compute({"a": 1.0, "b": 2.0})


def test_a_formula_error_scores_0_and_sets_its_flag():
    grader = {"type": "multi", "name": "m", "graders": {"a": string_check("eq")}, "calculate_output": "1 / (a - 1)"}
    runner = Runner(read_grader(grader))
    result = runner.grade(Sample("cp"), ITEM)
    assert result.score == 0 and result.metadata_errors()["formula_parse_error"]


@pytest.mark.parametrize(
    ("grader", "field"),
    [
        (string_check("contains"), "grader.operation"),
        ({"type": "string_check", "name": "s", "input": "x", "operation": "eq"}, "grader.reference"),
        ({"type": "text_similarity", "name": "t", "input": "x", "reference": "y", "evaluation_metric": "wer"},
         "grader.evaluation_metric"),
        ({"type": "python", "name": "p", "source": "x = 1"}, "grader: source must define grade"),
        ({"type": "python", "name": "p", "source": "def grade(:"}, "grader: source does not parse"),
        ({"type": "score_model", "name": "j", "model": "m", "input": [], "range": [0, 1]}, "grader.input"),
        ({"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "x"}],
          "range": [1, 0]}, "range must be two numbers"),
        ({"type": "label_model", "name": "l", "model": "m", "input": [{"role": "user", "content": "x"}],
          "labels": ["a"], "passing_labels": ["b"]}, "passing_labels ['b'] are not among labels"),
        ({"type": "multi", "name": "m", "graders": {"a": string_check("eq")}, "calculate_output": "a.b"},
         "calculate_output may not hold Attribute"),
        ({"type": "multi", "name": "m", "graders": {"a": string_check("bad")}, "calculate_output": "a"},
         "grader.graders.a.operation"),
        ({"type": "regex"}, "grader: Input tag 'regex'"),
    ],
)  # fmt: skip
def test_a_bad_grader_is_one_error_naming_its_field(grader, field):
    with pytest.raises(GraderError) as caught:
        read_grader(grader)
    assert field in caught.value.message
