"""Settings: keyword over environment over default, clear errors, and docs that match the code."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

import runtel
from runtel.config import ENVIRONMENT, Settings, resolve_settings


def test_keyword_wins_over_environment_over_default() -> None:
    environ = {"RUNTEL_FLUSH_INTERVAL": "0.25", "RUNTEL_EXPORTERS": "wandb, mlflow", "RUNTEL_TAGS": ""}
    settings = resolve_settings({"flush_interval": 2.0}, environ)
    assert settings.flush_interval == 2.0
    assert settings.exporters == ("wandb", "mlflow")
    assert settings.tags == ()
    assert resolve_settings({}, {}).system_interval == 10.0


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("RUNTEL_FLUSH_INTERVAL", "soon"), ("RUNTEL_QUEUE_SIZE", "0"), ("RUNTEL_GLOBAL_OTEL", "maybe")],
)
def test_bad_environment_value_names_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(runtel.ConfigError, match=variable):
        resolve_settings({}, {variable: raw})


def test_unknown_keyword_is_refused(base_dir: Path) -> None:
    with pytest.raises(runtel.ConfigError, match="flush_intervall"):
        runtel.init(project="p", base_dir=str(base_dir), flush_intervall=1)


def test_base_dir_comes_from_the_environment(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTEL_BASE_DIR", str(base_dir))
    monkeypatch.setenv("RUNTEL_PROJECT", "from-env")
    with runtel.init() as run:
        pass
    assert run.dir.parent == base_dir
    assert runtel.Store().run(run.id).project == "from-env"


def test_every_setting_has_a_variable_documented_in_the_configuration_table() -> None:
    assert set(ENVIRONMENT) == {spec.name for spec in fields(Settings)}
    table = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    for name, (variable, _, _) in ENVIRONMENT.items():
        assert f"| `{name}` | `{variable}` |" in table
