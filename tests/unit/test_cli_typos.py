"""A mistyped command is answered with the one meant, when one is close."""

from __future__ import annotations

from click.testing import CliRunner

from orchestrator.cli.group import cli


def test_a_mistyped_command_names_the_one_meant() -> None:
    result = CliRunner().invoke(cli, ["stauts"])
    assert result.exit_code == 2
    assert "No such command 'stauts'. Did you mean 'status'?" in result.output


def test_a_command_like_no_other_is_just_unknown() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'." in result.output and "Did you mean" not in result.output
