"""The house rules that a drawing cannot enforce: runs.py alone builds paths inside a run folder, and the public API's
names stay what the README says whatever has been imported."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import tunesmith

PACKAGE = Path(tunesmith.__file__).parent
RUN_FOLDER_NAMES = (
    "config.yaml",
    "manifest.json",
    "data-report.json",
    "held-out.jsonl",
    "reference.safetensors",
    "metrics.jsonl",
    "best.safetensors",
    "checkpoints",
    "step-",
    "adapter",
    "stages",
    "final",
    "eval",
    "export",
    "distill-report",
)
"""What runs.py names inside a run folder."""
BUILT_FROM_LITERAL = re.compile(r"/\s*f?[\"'](" + "|".join(re.escape(n) for n in RUN_FOLDER_NAMES) + r")[\"'/{.]")
"""`something / "final"`, `root / f"step-{n}"`, `run / "export/..."`: a path joined from one of those names."""


def test_no_module_but_runs_builds_a_run_folder_path_from_a_literal():
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "runs.py" or path.parent != PACKAGE
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if BUILT_FROM_LITERAL.search(line)
    ]
    assert found == [], "use tunesmith.runs.RunFolder instead:\n" + "\n".join(found)


def test_the_pattern_finds_what_it_is_meant_to():
    for line in ('run_dir / "stages" / name', 'root / f"step-{n:06d}"', "folder / 'final'", 'run / "export/x.zip"'):
        assert BUILT_FROM_LITERAL.search(line), line
    assert not BUILT_FROM_LITERAL.search('folder / "tokenizer.json"')


def _import_everything() -> None:
    for module in pkgutil.walk_packages([str(PACKAGE)], prefix="tunesmith."):
        if module.name != "tunesmith.__main__":
            importlib.import_module(module.name)


def test_the_public_functions_stay_functions_after_every_module_is_imported():
    _import_everything()
    from tunesmith.training.runner import resume, train

    assert tunesmith.train is train and tunesmith.resume is resume
    for name in tunesmith.__all__:
        value = getattr(tunesmith, name)
        assert not isinstance(value, type(tunesmith)), f"tunesmith.{name} is a module, not the public {name}"


def test_every_objective_setting_has_its_unit_and_every_unit_its_setting():
    from typing import get_args

    from tunesmith.auto import OBJECTIVE_RULES
    from tunesmith.config import RunConfig
    from tunesmith.training.objectives import OBJECTIVES

    assert set(get_args(RunConfig.model_fields["objective"].annotation)) == set(OBJECTIVES)
    assert set(OBJECTIVE_RULES) <= set(OBJECTIVES)
    assert all(kind.name == name for name, kind in OBJECTIVES.items())
