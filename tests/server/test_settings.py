"""The server's one settings object: environment, flags, validation, documentation."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from guard.errors import InputError
from server.cli import add_serve_arguments, build_parser, main
from server.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_env_then_overrides():
    s = Settings.from_env({"GUARD_DEVICE": "cpu", "GUARD_PORT": "9001"}, port=9002)
    assert s.device == "cpu" and s.port == 9002


@pytest.mark.parametrize(
    "env",
    [{"GUARD_DEVICE": "tpu"}, {"GUARD_MAX_BATCH_SIZE": "0"}, {"GUARD_GEOMETRY_THREADS": "0"}],
)
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


@pytest.mark.parametrize("level", ["debug", "Info", "WARNING", "error", "critical"])
def test_log_level_any_case(level):
    assert Settings.from_env({"GUARD_LOG_LEVEL": level}).log_level == level.upper()
    assert Settings.from_env({}, log_level=level).log_level == level.upper()


def _serve_exit(argv: list[str], env: dict[str, str], monkeypatch, capsys) -> tuple[int, str]:
    """``guard serve`` with ``argv`` and ``env``, stopped before anything is served."""

    async def fake_serve(settings: Settings) -> None:
        raise AssertionError("the settings were accepted")

    monkeypatch.setattr("server.cli._serve", fake_serve)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc = main(["serve", *argv])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,env",
    [(["--log-level", "verbose"], {}), ([], {"GUARD_LOG_LEVEL": "verbose"})],
    ids=["flag", "env"],
)
def test_bad_log_level_is_one_line_and_exit_2(argv, env, monkeypatch, capsys):
    rc, err = _serve_exit(argv, env, monkeypatch, capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guard: error: "), err
    assert "verbose" in lines[0] and "DEBUG, INFO, WARNING, ERROR, CRITICAL" in lines[0], err


def test_geometry_threads_reach_the_served_guard(guard):
    from server.dataplane.model import ServedModel

    before = guard.n_jobs
    try:
        assert ServedModel(guard, "m", threads=3).guard.n_jobs == 3
        assert Settings.from_env({"GUARD_GEOMETRY_THREADS": "-1"}).geometry_threads == -1
    finally:
        guard.n_jobs = before
