"""Podman as the deploy tests drive it on this machine (``../shared/RECIPES.md``): runc with
cgroupfs (crun fails here), no default ulimits, builds on the host network with this machine's CA
bundle given to pip, and a Debian base made with debootstrap (no image registry is reachable).

Both images are cached in podman's store between runs: the base is made once; the Guard image is
rebuilt only when its inputs change, recognised by a label with the SHA-256 of the build context
(the files ``.containerignore`` lets in), the Containerfile and the base image's ID. Podman's layer
cache makes a rebuild after a source edit reuse the dependency layers.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tests.tools import require_command

from .helpers import ROOT

BASE_IMAGE = "localhost/debian-py:bookworm"
IMAGE = "localhost/guard:test"
INPUTS_LABEL = "guard.inputs-sha256"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
IGNORE_FILE = ROOT / ".containerignore"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HINT = "apt-get install podman runc debootstrap, or `make apt`"
#: The base: Debian's minimal system with Python and its venv module (about 30 s - 4 min).
DEBOOTSTRAP = [
    "debootstrap",
    "--variant=minbase",
    "--include=python3,python3-venv,ca-certificates",
    "bookworm",
]
#: Left out of the base: package caches and lists, documentation, translations (about 150 MB).
BASE_EXCLUDES = (
    "./var/cache/apt/archives/*.deb",
    "./var/lib/apt/lists/*",
    "./usr/share/doc/*",
    "./usr/share/man/*",
    "./usr/share/locale/*",
)
BASE_TIMEOUT_S = 1200
BUILD_TIMEOUT_S = 2400


class PodmanError(AssertionError):
    pass


class Podman:
    """``podman --runtime runc --cgroup-manager=cgroupfs`` with its own containers.conf."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_command("podman", HINT)
        require_command("runc", HINT)
        self.workdir = workdir
        conf = workdir / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, "--runtime", "runc", "--cgroup-manager=cgroupfs", *args]

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True, log: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        if log is not None:
            with open(log, "a") as out:
                out.write(f"$ podman {' '.join(args)}\n")
                out.flush()
                proc = subprocess.run(
                    self.cmd(*args),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=self.env,
                    timeout=timeout,
                )
        else:
            proc = subprocess.run(
                self.cmd(*args), capture_output=True, text=True, env=self.env, timeout=timeout
            )
        if check and proc.returncode != 0:
            detail = _tail(log) if log is not None else (proc.stdout + proc.stderr)[-4000:]
            raise PodmanError(
                f"podman {' '.join(args[:3])} ... failed ({proc.returncode}):\n{detail}"
            )
        return proc

    def image_id(self, image: str) -> str | None:
        proc = self("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def image_label(self, image: str, label: str) -> str | None:
        proc = self(
            "image", "inspect", "--format", f'{{{{index .Labels "{label}"}}}}', image, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    # ------------------------------------------------------------------ images
    def ensure_base(self, log: Path) -> str:
        """The Debian base (made with debootstrap the first time): its image ID."""
        found = self.image_id(BASE_IMAGE)
        if found:
            return found
        debootstrap = require_command("debootstrap", HINT)
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            rootfs = Path(tmp) / "rootfs"
            with open(log, "a") as out:
                out.write(f"$ {' '.join(DEBOOTSTRAP)} {rootfs}\n")
                out.flush()
                proc = subprocess.run(
                    [debootstrap, *DEBOOTSTRAP[1:], str(rootfs)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=BASE_TIMEOUT_S,
                )
            if proc.returncode != 0:
                raise PodmanError(f"debootstrap failed ({proc.returncode}):\n{_tail(log)}")
            archive = Path(tmp) / "rootfs.tar"
            excludes = [f"--exclude={pattern}" for pattern in BASE_EXCLUDES]
            subprocess.run(
                ["tar", "-C", str(rootfs), *excludes, "-cf", str(archive), "."],
                check=True,
                timeout=600,
            )
            self(
                "import",
                "--change",
                'CMD ["/bin/bash"]',
                str(archive),
                BASE_IMAGE,
                timeout=600,
                log=log,
            )
        found = self.image_id(BASE_IMAGE)
        assert found, f"{BASE_IMAGE} missing after the import"
        return found

    def ensure_image(self, log: Path) -> tuple[str, float]:
        """The Guard image built from the working tree, reused when its inputs are unchanged:
        (image ID, seconds spent building; 0 when reused)."""
        base_id = self.ensure_base(log)
        digest = inputs_digest(base_id)
        old = self.image_id(IMAGE)
        if old and self.image_label(IMAGE, INPUTS_LABEL) == digest:
            return old, 0.0
        t0 = time.monotonic()
        args = [
            "build",
            "--format",
            "docker",  # keeps HEALTHCHECK (the OCI format has no such field)
            "--network=host",
            "--build-arg",
            f"BASE={BASE_IMAGE}",
            "--label",
            f"{INPUTS_LABEL}={digest}",
            "-t",
            IMAGE,
            "-f",
            str(CONTAINERFILE),
        ]
        if CA_BUNDLE.is_file():  # pip inside the build trusts what this machine trusts
            args += [
                "-v",
                f"{CA_BUNDLE}:/etc/ssl/certs/host-ca.crt:ro",
                "--build-arg",
                "PIP_CERT=/etc/ssl/certs/host-ca.crt",
            ]
        self(*args, str(ROOT), timeout=BUILD_TIMEOUT_S, log=log)
        new = self.image_id(IMAGE)
        assert new, f"{IMAGE} missing after the build"
        if old and old != new:  # the replaced image (its cache layers stay)
            self("rmi", old, check=False)
        return new, time.monotonic() - t0

    # ------------------------------------------------------------------ containers
    def remove(self, name: str) -> None:
        self("rm", "--force", "--time", "0", name, check=False, timeout=60)


def context_files() -> list[Path]:
    """The files of the build context: ``.containerignore`` is ``*``, then ``!path`` lines that
    let files or folders in, then patterns (``**/x``) that keep some out again."""
    lines = [ln.strip() for ln in IGNORE_FILE.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "*", f"{IGNORE_FILE}: expected '*' first"
    included = [ln[1:].rstrip("/") for ln in lines[1:] if ln.startswith("!")]
    excluded = [ln.removeprefix("**/") for ln in lines[1:] if not ln.startswith("!")]
    files: list[Path] = []
    for entry in included:
        path = ROOT / entry
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in candidates:
            rel = f.relative_to(ROOT)
            if f.is_file() and not any(
                fnmatch.fnmatch(part, pattern) for part in rel.parts for pattern in excluded
            ):
                files.append(f)
    return files


def inputs_digest(base_id: str) -> str:
    """SHA-256 over the Containerfile, the ignore file, the base image and the context's files."""
    h = hashlib.sha256()
    h.update(base_id.encode())
    for f in [CONTAINERFILE, IGNORE_FILE, *context_files()]:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _tail(log: Path | None, n: int = 60) -> str:
    if log is None or not log.is_file():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
