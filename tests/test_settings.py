"""Settings from the environment: one parser for the sidecar and the operator, so the same
mistake stops either program with the same message, naming the variable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mas_core.settings import EnvSettings
from mas_operator.config import ConfigError as OperatorConfigError
from mas_operator.config import OperatorConfig
from mas_sidecar.config import SidecarConfig
from mas_sidecar.errors import ConfigError as SidecarConfigError

SIDECAR = {"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "redis://r:6379", "MAS_SIDECAR_TOKEN": "t" * 32}
OPERATOR = {"MAS_REDIS_URL": "redis://r:6379"}


def sidecar_error(**env: str) -> str:
    with pytest.raises(SidecarConfigError) as failed:
        SidecarConfig.build(agent_id=None, port=None, redis_url=None, env={**SIDECAR, **env})
    return str(failed.value)


def operator_error(**env: str) -> str:
    with pytest.raises(OperatorConfigError) as failed:
        OperatorConfig.from_env({**OPERATOR, **env})
    return str(failed.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "MAS_REDIS_WAIT_REPLICAS",
            "two",
            "MAS_REDIS_WAIT_REPLICAS='two' is not an integer "
            "(it must be a number between 0 and 100)",
        ),
        (
            "MAS_REDIS_WAIT_REPLICAS",
            "101",
            "MAS_REDIS_WAIT_REPLICAS=101 is outside its range "
            "(it must be a number between 0 and 100)",
        ),
        (
            "MAS_REDIS_WAIT_TIMEOUT_MS",
            "1.5",
            "MAS_REDIS_WAIT_TIMEOUT_MS='1.5' is not an integer "
            "(it must be a number between 1 and 60000)",
        ),
        (
            "MAS_LOG_LEVEL",
            "LOUD",
            "MAS_LOG_LEVEL='LOUD' must be one of DEBUG, INFO, WARNING, ERROR",
        ),
    ],
)
def test_the_same_mistake_reads_the_same_in_the_sidecar_and_the_operator(
    name: str, value: str, message: str
) -> None:
    assert sidecar_error(**{name: value}) == message
    assert operator_error(**{name: value}) == message


def test_the_sidecar_checks_its_log_level_and_takes_any_case() -> None:
    assert "MAS_LOG_LEVEL" in sidecar_error(MAS_LOG_LEVEL="verbose")
    config = SidecarConfig.build(
        agent_id=None, port=None, redis_url=None, env={**SIDECAR, "MAS_LOG_LEVEL": "warning"}
    )
    assert config.log_level == "WARNING"


def test_each_kind_of_setting_is_read_typed_with_defaults_for_empty_values(
    tmp_path: Path,
) -> None:
    env = {
        "N": " 42 ",
        "F": "0.5",
        "B": "yes",
        "L": "a, b,,c",
        "P": str(tmp_path),
        "J": '{"k": 1}',
        "EMPTY": "  ",
    }
    read = EnvSettings(env, ValueError)
    assert read.integer("N", 0, 0, 100) == 42
    assert read.integer("EMPTY", 7, 0, 100) == 7
    assert read.number("F", 1, 0.1, 1) == 0.5
    assert read.flag("B") and not read.flag("EMPTY")
    assert read.items("L") == ("a", "b", "c")
    assert read.path("P", absolute=True) == tmp_path
    assert read.path("EMPTY") is None
    assert read.json_object("J") == {"k": 1}
    assert read.text("EMPTY", "fallback") == "fallback"
    assert read.choice("MISSING", ("X", "Y"), "X") == "X"


@pytest.mark.parametrize(
    ("env", "call", "message"),
    [
        ({"F": "fast"}, lambda r: r.number("F", 1, 0.1, 3600), "F='fast' is not a number"),
        ({"F": "0.01"}, lambda r: r.number("F", 1, 0.1, 3600), "between 0.1 and 3600"),
        ({"B": "perhaps"}, lambda r: r.flag("B"), "B must be true or false, not 'perhaps'"),
        ({"P": "relative/dir"}, lambda r: r.path("P", absolute=True), "must be an absolute path"),
        ({"J": "[1]"}, lambda r: r.json_object("J"), "J must be a JSON object"),
        ({"S": "x", "S_FILE": "/x"}, lambda r: r.secret("S"), "set S or S_FILE, not both"),
    ],
)
def test_a_bad_value_raises_the_programs_own_error_naming_the_variable(
    env: dict[str, str], call: Callable[[EnvSettings], object], message: str
) -> None:
    class ProgramError(Exception):
        pass

    with pytest.raises(ProgramError, match=message):
        call(EnvSettings(env, ProgramError))
