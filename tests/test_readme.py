"""README.md is the user's only manual: every flag of every command and every config key is in it,
and its config example is a real config. Derived from the code, so the two cannot drift apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import typer.main

from agent.cli import app
from agent.config import FIELDS, _flatten, load_file

README = (Path(__file__).parent.parent / "README.md").read_text()


def _flags(command: str) -> set[str]:
    click_command = typer.main.get_command(app).commands[command]
    return {opt for param in click_command.params for opt in (*param.opts, *param.secondary_opts)
            if opt.startswith("--") and opt != "--help"}


def _documented(section: str) -> set[str]:
    """Flags named in the flag tables (first column) under the heading `section`."""
    start = README.index(section)
    end = README.find("\n## ", start + 1)
    body = README[start:end if end > 0 else None]
    return set(re.findall(r"--[a-z0-9-]+", "\n".join(line.split(" | ")[0] for line in body.splitlines()
                                                        if line.startswith("| `--"))))


@pytest.mark.parametrize(("command", "section"), [("run", "## Usage"), ("responder", "## The far end")])
def test_every_flag_is_documented(command, section):
    flags = _flags(command)
    assert flags, command
    assert flags - _documented(section) == set(), f"flags of `xcheck {command}` missing from README {section}"
    assert _documented(section) - flags == set(), f"README {section} documents flags `xcheck {command}` lacks"


def test_config_example_shows_every_key_and_loads(tmp_path):
    example = re.search(r"Config file.*?```toml\n(.*?)```", README, re.S).group(1)
    path = tmp_path / "example.toml"
    path.write_text(example)
    load_file(path)  # a real config: it validates
    assert set(_flatten(tomllib.loads(example))) == set(FIELDS)
