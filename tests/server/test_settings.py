"""The server's one settings object: environment, flags, validation, documentation."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from guard.errors import InputError
from server.cli import build_parser
from server.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_env_then_overrides():
    s = Settings.from_env({"GUARD_DEVICE": "cpu", "GUARD_PORT": "9001"}, port=9002)
    assert s.device == "cpu" and s.port == 9002


@pytest.mark.parametrize("env", [{"GUARD_DEVICE": "tpu"}, {"GUARD_MAX_BATCH_SIZE": "0"}])
def test_invalid_values_are_refused(env):
    with pytest.raises(InputError):
        Settings.from_env(env)


def test_every_setting_has_a_flag_and_a_readme_row():
    flags = {a.dest for a in build_parser()._actions}
    text = README.read_text()
    for f in fields(Settings):
        assert f.name in flags, f.name
        assert f"`GUARD_{f.name.upper()}`" in text, f.name
