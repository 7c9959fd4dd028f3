"""The server's one settings object: environment, flags, validation, documentation."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from guard.errors import InputError
from server.cli import add_serve_arguments, build_parser
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
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    flags = {a.dest for a in p._actions}
    text = README.read_text()
    for f in fields(Settings):
        assert f.name in flags, f.name
        assert f"`GUARD_{f.name.upper()}`" in text, f.name


def test_serve_flags_reach_the_settings(monkeypatch):
    """``guard serve`` flags override the environment; unset flags leave it alone."""
    seen = {}

    async def fake_serve(settings: Settings) -> None:
        seen["settings"] = settings

    monkeypatch.setattr("server.cli._serve", fake_serve)
    monkeypatch.setenv("GUARD_PORT", "9001")
    monkeypatch.setenv("GUARD_MAX_BATCH_SIZE", "8")
    args = build_parser().parse_args(
        ["serve", "--port", "9002", "--no-geometry", "--log-level", "WARNING"]
    )
    assert args.func(args) == 0
    s = seen["settings"]
    assert (s.port, s.max_batch_size, s.geometry, s.log_level) == (9002, 8, False, "WARNING")
