"""Test certificates, made at test time by the README's own ``openssl`` block ("Run it
securely"): a CA, a server certificate for localhost / 127.0.0.1, a client certificate and a
token file; the block is run twice, the second run giving an unrelated CA and its certificates."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"

HAVE_OPENSSL = shutil.which("openssl") is not None


def readme_pki_commands() -> str:
    """The first ``sh`` block of the README's "Run it securely" section."""
    section = README.read_text(encoding="utf-8").split("## Run it securely", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "no sh block in 'Run it securely'"
    return match.group(1)


@dataclass(frozen=True)
class Pki:
    """Paths of one run of the README block."""

    dir: Path

    def __truediv__(self, name: str) -> Path:
        return self.dir / name

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()

    def path(self, name: str) -> str:
        return str(self.dir / name)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_pki_commands()],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    pki = Pki(directory)
    for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key", "tokens.txt"):
        assert (directory / name).stat().st_size > 0, name
    return pki
