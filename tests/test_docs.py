"""The documentation stays complete: every setting's environment variable and every
`kb` command is described in the README."""

from __future__ import annotations

from kb.cli import build_parser
from kb.settings import ENV_VARIABLES, Settings

from conftest import REPO


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_every_environment_variable_is_documented():
    text = readme()
    missing = [name for name in ENV_VARIABLES.values() if f"`{name}`" not in text]
    assert not missing, f"README lacks: {missing}"


def test_every_environment_variable_names_a_real_setting():
    fields = set(Settings.__dataclass_fields__)
    assert set(ENV_VARIABLES) <= fields


def test_every_command_is_documented():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    text = readme()
    missing = [name for name in commands if f"`kb {name}" not in text]
    assert not missing, f"README lacks commands: {missing}"


def test_readme_states_the_two_commands_and_ci_calls_the_test_command():
    text = readme()
    assert "make run" in text and "make test" in text
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
