"""Security settings without a gRPC server: ``guard serve`` refuses bad TLS / token settings
with one line and exit code 2, :class:`TokenAuth` on its own, the reflection default, and the
``ssl.SSLContext`` the HTTP transport serves with (checked with asyncio's TLS streams)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
from pathlib import Path

import pytest

from guard.errors import InputError
from server.cli import main
from server.errors import Code, Unauthenticated, code_of
from server.security import (
    BAD_SCHEME,
    BAD_TOKEN,
    MISSING,
    TokenAuth,
    grpc_credentials,
    load_tls,
    parse_tokens,
    ssl_context,
)
from server.settings import Settings

from .security_pki import HAVE_OPENSSL, Pki, make_pki

pytestmark = pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl command")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("other-pki"))


def _serve(argv: list[str], monkeypatch, capsys, env: dict[str, str] | None = None):
    """``guard serve argv``; returns (exit code, stderr, the settings it would serve)."""
    seen: dict[str, Settings] = {}

    async def fake_serve(settings: Settings) -> None:
        seen["settings"] = settings

    monkeypatch.setattr("server.cli._serve", fake_serve)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    rc = main(["serve", *argv])
    return rc, capsys.readouterr().err, seen.get("settings")


def _one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guard: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def test_unauthenticated_row():
    assert code_of(Unauthenticated("x")) is Code.UNAUTHENTICATED
    assert Code.UNAUTHENTICATED.grpc_name == "UNAUTHENTICATED"
    assert Code.UNAUTHENTICATED.http_status == 401


def test_bad_tls_settings_are_one_line_and_exit_2(pki, other, tmp_path, monkeypatch, capsys):
    crt, key, ca = pki.path("server.crt"), pki.path("server.key"), pki.path("ca.crt")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", key, "-aes256", "-passout", "pass:secret", "-out", encrypted],
        check=True,
        capture_output=True,
    )
    missing = str(tmp_path / "missing.crt")
    cases = [
        (["--tls-cert", crt], ["tls_key", "--tls-key", "both"]),
        (["--tls-key", key], ["tls_cert", "--tls-cert", "both"]),
        (["--tls-client-ca", ca], ["--tls-client-ca", "--tls-cert"]),
        (["--tls-cert", missing, "--tls-key", key], ["cannot read", "missing.crt"]),
        (["--tls-cert", crt, "--tls-key", missing], ["cannot read", "missing.crt"]),
        (["--tls-cert", str(garbage), "--tls-key", key], ["no PEM certificate"]),
        (["--tls-cert", crt, "--tls-key", other.path("server.key")], ["not the private key"]),
        (["--tls-cert", crt, "--tls-key", pki.path("client.key")], ["not the private key"]),
        (["--tls-cert", crt, "--tls-key", str(encrypted)], ["encrypted"]),
        (["--tls-cert", crt, "--tls-key", key, "--tls-client-ca", str(garbage)], ["CA"]),
        (["--tls-cert", crt, "--tls-key", key, "--tls-client-ca", missing], ["cannot read"]),
    ]
    for argv, needles in cases:
        rc, err, _ = _serve(argv, monkeypatch, capsys)
        _one_line_error(rc, err, *needles)
    rc, err, _ = _serve([], monkeypatch, capsys, env={"GUARD_TLS_CERT": crt})
    _one_line_error(rc, err, "GUARD_TLS_KEY")


def test_bad_token_files_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    spaced = tmp_path / "spaced.txt"
    spaced.write_text("good-token\nsecret with spaces\n")
    cases = [
        (tmp_path / "missing.txt", ["cannot read"]),
        (empty, ["no token"]),
        (spaced, ["line 2", "not a valid token"]),
    ]
    for path, needles in cases:
        rc, err, _ = _serve(["--auth-token-file", str(path)], monkeypatch, capsys)
        _one_line_error(rc, err, "--auth-token-file", *needles)
        assert "secret" not in err  # a bad line is named by number, not quoted


def test_security_flags_reach_the_settings(pki, monkeypatch, capsys):
    argv = ["--tls-cert", pki.path("server.crt"), "--tls-key", pki.path("server.key")]
    argv += ["--tls-client-ca", pki.path("ca.crt"), "--auth-token-file", pki.path("tokens.txt")]
    argv += ["--metrics-host", "127.0.0.1", "--host", "::"]
    rc, err, s = _serve(argv, monkeypatch, capsys)
    assert rc == 0 and s is not None, err
    assert s.tls_client_ca == pki.path("ca.crt") and s.auth_token_file == pki.path("tokens.txt")
    assert (s.host, s.metrics_bind) == ("::", "127.0.0.1")
    assert s.reflection is None and not s.reflection_on
    rc, err, s = _serve([*argv, "--reflection"], monkeypatch, capsys)
    assert rc == 0 and s is not None and s.reflection_on, err
    rc, err, s = _serve(["--no-reflection"], monkeypatch, capsys, env={"GUARD_METRICS_HOST": "::1"})
    assert rc == 0 and s is not None and s.reflection is False and s.metrics_bind == "::1", err


def test_defaults():
    s = Settings()
    assert s.host == "0.0.0.0" and s.metrics_bind == "0.0.0.0"  # all interfaces (containers)
    assert s.reflection_on and load_tls(s) is None and grpc_credentials(s) is None
    assert ssl_context(s) is None
    assert not Settings(auth_token_file="t").reflection_on
    assert not Settings(tls_cert="c", tls_key="k").reflection_on
    assert Settings.from_env({"GUARD_REFLECTION": "true", "GUARD_HOST": "127.0.0.1"}).reflection_on


# ---------------------------------------------------------------- TokenAuth on its own
def test_token_auth_check(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "tokens.txt"
    path.write_text("# ops team\n\n  tok-one \ntok-two\n")
    path.chmod(0o600)
    auth = TokenAuth(str(path))
    assert auth.n_tokens == 2
    auth.check("Bearer tok-one")
    auth.check("bearer tok-two")
    auth.check("  BEARER   tok-two  ")
    for header, message in [
        (None, MISSING),
        ("", MISSING),
        ("Bearer", BAD_SCHEME),
        ("Basic tok-one", BAD_SCHEME),
        ("tok-one", BAD_SCHEME),
        ("Bearer tok-three", BAD_TOKEN),
        ("Bearer tok-on", BAD_TOKEN),  # a prefix
        ("Bearer tok-one2", BAD_TOKEN),
        ("Bearer # ops team", BAD_TOKEN),  # comments are not tokens
    ]:
        with pytest.raises(Unauthenticated) as info:
            auth.check(header)
        assert str(info.value) == message, header
    assert "tok-one" not in caplog.text and "tok-two" not in caplog.text


def test_token_file_readable_by_others_is_warned_about(tmp_path, caplog):
    path = tmp_path / "tokens.txt"
    path.write_text("tok\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="server.security"):
        TokenAuth(str(path))
    assert "chmod 600" in caplog.text


def test_parse_tokens_refuses_bad_lines():
    assert len(parse_tokens("a\n#b\n\nc\n", "f")) == 2
    for text in ("", "# none\n", "ok\nnon-ascii-é\n", "ok\nwith space\n"):
        with pytest.raises(InputError):
            parse_tokens(text, "f")


# ---------------------------------------------------------------- ssl_context (HTTP transport)
def _client_ctx(ca: Pki, client: Pki | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca.path("ca.crt"))
    if client is not None:
        ctx.load_cert_chain(client.path("client.crt"), client.path("client.key"))
    return ctx


def _echo_over(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes:
    """Send b"ping" through a TLS echo server; what came back (b"" or an error: refused)."""

    async def go() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(await reader.readexactly(4))
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )
            writer.write(b"ping")
            await writer.drain()
            got = await asyncio.wait_for(reader.read(4), 10)
            writer.close()
            return got
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            return b""
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(go())


def test_ssl_context_tls_and_mutual_tls(pki, other):
    tls = Settings(tls_cert=pki.path("server.crt"), tls_key=pki.path("server.key"))
    ctx = ssl_context(tls)
    assert ctx is not None and ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert _echo_over(ctx, _client_ctx(pki)) == b"ping"
    assert _echo_over(ctx, _client_ctx(other)) == b""  # the client does not trust it
    mutual = Settings(
        tls_cert=pki.path("server.crt"),
        tls_key=pki.path("server.key"),
        tls_client_ca=pki.path("ca.crt"),
    )
    mctx = ssl_context(mutual)
    assert mctx is not None and mctx.verify_mode == ssl.CERT_REQUIRED
    assert _echo_over(mctx, _client_ctx(pki, client=pki)) == b"ping"
    assert _echo_over(mctx, _client_ctx(pki)) == b""  # no client certificate
    assert _echo_over(mctx, _client_ctx(pki, client=other)) == b""  # another CA's


def test_load_tls_reads_the_files(pki):
    tls = load_tls(
        Settings(
            tls_cert=pki.path("server.crt"),
            tls_key=pki.path("server.key"),
            tls_client_ca=pki.path("ca.crt"),
        )
    )
    assert tls is not None and tls.mutual
    assert tls.cert == pki.read("server.crt") and tls.key == pki.read("server.key")
    assert Path(tls.cert_path).name == "server.crt"
