"""`tunesmith train`'s options come from RunConfig: every setting has one, pydantic parses it, errors name it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.cli.settings import FILE_ONLY, settings
from tunesmith.config import LoraSettings, PreferenceSettings, ReinforcementSettings, RunConfig, TrackingSettings
from tunesmith.training import runner

runner_cli = CliRunner()


class Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake_train(config, run_dir, *, sink=None, stop=None):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(runner, "train", fake_train)
    return seen


def test_every_setting_of_run_config_is_an_option_but_the_file_only_stages():
    result = runner_cli.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    fields = [s.field for s in settings()]
    assert "lora.rank" in fields and "compile" in fields and "stages" not in fields and "--stages" not in result.output
    groups = (LoraSettings, PreferenceSettings, ReinforcementSettings, TrackingSettings)  # walked into
    own = len(RunConfig.model_fields) - len(groups) - len(FILE_ONLY)
    assert len(fields) == own + sum(len(g.model_fields) for g in groups)
    for s in settings():
        assert s.flags[0] in result.output, s.flags[0]


def test_options_are_parsed_by_pydantic_into_the_config(captured, tmp_path):
    args = [
        "train",
        "--data",
        "d.jsonl",
        "--lr",
        "1e-4",
        "--epochs",
        "auto",
        "--lora-rank",
        "8",
        "--lora-targets",
        "q_proj",
        "--lora-targets",
        "v_proj",
        "--trust-remote-code",
        "true",
        "--out",
        str(tmp_path / "r"),
    ]
    result = runner_cli.invoke(app, args)
    assert isinstance(result.exception, Stop), result.output
    config = captured["config"]
    assert config.learning_rate == 1e-4 and config.epochs == "auto" and config.lora.rank == 8
    assert config.lora.targets == ("q_proj", "v_proj") and config.trust_remote_code is True
    assert config.method == "lora"  # untouched settings keep RunConfig's defaults


def test_an_option_overrides_the_config_file_and_set_overrides_both(captured, tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("data: d.jsonl\nmax_length: 512\nlora:\n  rank: 4\n  alpha: 8\n")
    args = ["train", "-c", str(file), "--max-length", "256", "--set", "lora.rank=32", "--out", str(tmp_path / "r")]
    result = runner_cli.invoke(app, args)
    assert isinstance(result.exception, Stop), result.output
    config = captured["config"]
    assert (config.max_length, config.lora.rank, config.lora.alpha) == (256, 32, 8)


@pytest.mark.parametrize(
    ("args", "field"),
    [(["--lora-rank", "eight"], "lora.rank"), (["--method", "qlora"], "method"), (["--epochs", "0.5"], "epochs")],
)
def test_a_bad_value_is_one_line_naming_the_setting(captured, tmp_path, args, field):
    result = runner_cli.invoke(app, ["train", "--data", "d.jsonl", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"field {field}:" in result.output and len(result.output.strip().splitlines()) == 1
