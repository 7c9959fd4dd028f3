"""Transport security, shared by every transport: TLS / mutual TLS material and bearer tokens.

* TLS: ``tls_cert`` + ``tls_key`` (both or neither, PEM, unencrypted key) turn TLS on;
  ``tls_client_ca`` (PEM bundle) additionally requires every client to present a certificate
  signed by one of those CAs (mutual TLS). :func:`load_tls` reads and checks the files (readable,
  PEM, the key belongs to the certificate) and raises one :class:`~guard.errors.InputError` line
  otherwise; :func:`grpc_credentials` and :func:`ssl_context` (for aiohttp) build the transports'
  objects from the same files. Files are read once, at start: a renewed certificate needs a
  restart.
* Tokens: :class:`TokenAuth` holds the tokens of ``auth_token_file`` (one per line; blank lines
  and ``#`` comments ignored) and checks an ``authorization: Bearer <token>`` header value in
  constant time (SHA-256 of the presented token against SHA-256 of every token with
  :func:`hmac.compare_digest`, no early exit). The file is re-read when it changes: every check
  looks at its ``stat`` (mtime, size, inode), so an edit or an atomic rename takes effect on the
  next request, no signal needed. A file modified less than :data:`RACY_S` before it was read is
  re-read on every check until it is older (git's "racy" rule: a second same-size write within
  the file system's timestamp granularity leaves the stat unchanged). A file that becomes
  unreadable, empty or malformed refuses every token (fail closed) until it is fixed. Tokens are
  never logged or echoed.

grpc is imported only inside :func:`grpc_credentials`: this module is stdlib-only otherwise, so
the settings can validate with it and an HTTP-only transport need not load grpc.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from guard.errors import InputError

from .errors import Unauthenticated

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

#: The scheme of the ``authorization`` header (RFC 6750), matched case-insensitively.
SCHEME = "bearer"
PEM_CERT = b"-----BEGIN CERTIFICATE-----"

MISSING = "missing credentials: send the metadata/header 'authorization: Bearer <token>'"
BAD_SCHEME = "the authorization header must read 'Bearer <token>'"
BAD_TOKEN = "invalid token"
#: A token file modified this recently (seconds) is re-read on every check, not only on a change.
RACY_S = 2.0


class SecuritySettings(Protocol):
    """What this module reads of :class:`server.settings.Settings` (which imports this module,
    hence a protocol rather than the class)."""

    @property
    def tls_cert(self) -> str | None: ...
    @property
    def tls_key(self) -> str | None: ...
    @property
    def tls_client_ca(self) -> str | None: ...
    @property
    def auth_token_file(self) -> str | None: ...


def _what(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')} / GUARD_{name.upper()})"


# ---------------------------------------------------------------- TLS
@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes of a checked certificate chain, its key and the optional client CA bundle."""

    cert_path: str
    key_path: str
    client_ca_path: str | None
    cert: bytes
    key: bytes
    client_ca: bytes | None

    @property
    def mutual(self) -> bool:
        """Clients must present a certificate signed by ``client_ca``."""
        return self.client_ca is not None


def _read(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(f"{_what(name)}: cannot read {path!r}: {exc.strerror or exc}") from None
    if not data.strip():
        raise InputError(f"{_what(name)}: {path!r} is empty")
    return data


def _no_password() -> str:
    raise InputError("it is encrypted; give an unencrypted PEM key (openssl pkey -in K -out K2)")


def load_tls(settings: SecuritySettings) -> TlsFiles | None:
    """The TLS files of ``settings``, read and checked; None when TLS is off.

    Raises InputError (one line, naming the setting and the file) for a cert without a key or the
    reverse, a client CA without a certificate, an unreadable or non-PEM file, an encrypted key,
    or a key that does not belong to the certificate.
    """
    cert_path, key_path, ca_path = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if not cert_path and not key_path:
        if ca_path:
            raise InputError(
                f"{_what('tls_client_ca')} requires TLS: give --tls-cert and --tls-key as well"
            )
        return None
    if not cert_path or not key_path:
        given, missing = ("tls_cert", "tls_key") if cert_path else ("tls_key", "tls_cert")
        raise InputError(
            f"{_what(given)} needs {_what(missing)}: give both the certificate and its key, "
            "or neither"
        )
    cert, key = _read("tls_cert", cert_path), _read("tls_key", key_path)
    if PEM_CERT not in cert:
        raise InputError(f"{_what('tls_cert')}: {cert_path!r} holds no PEM certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert_path, key_path, password=_no_password)
    except InputError as exc:
        raise InputError(f"{_what('tls_key')}: {key_path!r}: {exc}") from None
    except ssl.SSLError as exc:
        raise InputError(
            f"{_what('tls_key')}: {key_path!r} is not the private key of the certificate "
            f"{cert_path!r}, or one of them is not valid PEM ({exc.reason or exc})"
        ) from None
    ca: bytes | None = None
    if ca_path:
        ca = _read("tls_client_ca", ca_path)
        try:
            if PEM_CERT not in ca:
                raise ValueError("no PEM certificate")
            ctx.load_verify_locations(cadata=ca.decode("ascii"))
        except (ValueError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise InputError(
                f"{_what('tls_client_ca')}: {ca_path!r} holds no valid PEM CA certificate "
                f"({reason})"
            ) from None
    return TlsFiles(cert_path, key_path, ca_path or None, cert, key, ca)


def grpc_credentials(settings: SecuritySettings) -> grpc.ServerCredentials | None:
    """Server credentials for ``grpc.aio.Server.add_secure_port``; None = plaintext."""
    tls = load_tls(settings)
    if tls is None:
        return None
    import grpc

    return grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.client_ca, require_client_auth=tls.mutual
    )


def ssl_context(settings: SecuritySettings) -> ssl.SSLContext | None:
    """A server-side :class:`ssl.SSLContext` (aiohttp's ``web.TCPSite(..., ssl_context=...)``):
    TLS 1.2 or later, client certificates required under mutual TLS; None = plaintext."""
    tls = load_tls(settings)
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_path, tls.key_path, password=_no_password)
    if tls.client_ca is not None:
        ctx.load_verify_locations(cadata=tls.client_ca.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# ---------------------------------------------------------------- bearer tokens
def _digest(token: str | bytes) -> bytes:
    data = token.encode("utf-8", "surrogateescape") if isinstance(token, str) else token
    return hashlib.sha256(data).digest()


def parse_tokens(text: str, path: str) -> list[bytes]:
    """SHA-256 digests of the tokens in ``text`` (one per line; blank lines and ``#`` comments
    skipped). A token is printable ASCII without spaces (what an HTTP header and gRPC metadata
    can carry); a bad line is reported by number, never by content."""
    digests = []
    for n, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if not all(33 <= ord(c) <= 126 for c in token):
            raise InputError(
                f"{_what('auth_token_file')}: line {n} of {path!r} is not a valid token "
                "(printable ASCII, no spaces)"
            )
        digests.append(_digest(token))
    if not digests:
        raise InputError(f"{_what('auth_token_file')}: {path!r} holds no token (one per line)")
    return digests


class TokenAuth:
    """The bearer tokens of ``path``; :meth:`check` an ``authorization`` header value.

    The file is read now (an InputError if it is unreadable or holds no token) and again
    whenever its stat changes (checked on every :meth:`check`).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp = self._stat()
        if self._stamp is None:
            _read("auth_token_file", path)  # raises with the OS's reason
        self._racy = self._is_racy()
        self._digests = parse_tokens(self._read_text(), path)
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "the token file %r can be read by other users (mode %o): chmod 600 it",
                path,
                stat.S_IMODE(mode),
            )
        log.info("bearer-token authentication on: %d token(s) from %r", len(self._digests), path)

    @property
    def n_tokens(self) -> int:
        return len(self._digests)

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def _is_racy(self) -> bool:
        """Modified so recently that a same-size rewrite might not change the stat."""
        return self._stamp is not None and time.time_ns() - self._stamp[0] < RACY_S * 1e9

    def _read_text(self) -> str:
        return _read("auth_token_file", self.path).decode("utf-8", "surrogateescape")

    def reload(self) -> None:
        """Re-read the file (also done by :meth:`check` when it changed). On any problem every
        token is refused until the file is fixed (fail closed); the problem is logged."""
        self._stamp = self._stat()
        self._racy = self._is_racy()
        try:
            digests = parse_tokens(self._read_text(), self.path)
        except InputError as exc:
            if self._digests:
                log.error("token file: %s; every request is refused until it is fixed", exc)
            self._digests = []
            return
        if digests != self._digests:
            log.info("token file %r reloaded: %d token(s)", self.path, len(digests))
        self._digests = digests

    def _refresh(self) -> None:
        if self._racy or self._stat() != self._stamp:
            self.reload()

    def check(self, header_value: str | None) -> None:
        """Raise :class:`~server.errors.Unauthenticated` unless ``header_value`` (the
        ``authorization`` header / metadata value, None when absent) is ``Bearer <token>`` with
        one of the file's tokens. The comparison takes the same time for every token."""
        self._refresh()
        if header_value is None or not header_value.strip():
            raise Unauthenticated(MISSING)
        scheme, _, token = header_value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != SCHEME or not token:
            raise Unauthenticated(BAD_SCHEME)
        presented = _digest(token)
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(presented, digest)
        if not ok:
            raise Unauthenticated(BAD_TOKEN)


def token_auth(settings: SecuritySettings) -> TokenAuth | None:
    """The :class:`TokenAuth` of ``settings.auth_token_file``; None when auth is off."""
    return TokenAuth(settings.auth_token_file) if settings.auth_token_file else None
