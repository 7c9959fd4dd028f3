"""``guard demo``: serve the built-in Fashion-MNIST guard and query it the way a user would.

Fits the default artifact on first use (:func:`guard.defaults.default_guard`), starts
``guard serve`` as a subprocess (``python -m server``: a real server process, stopped with
SIGTERM at the end), sends real in-distribution images (Fashion-MNIST test), real
out-of-distribution images (scikit-learn's handwritten digits, resized to 28x28) and noise
through a stock Triton client (``tritonclient.grpc``, Open Inference Protocol), and prints what
the guard decided for each.

``guard demo --upstream`` runs the same scenario with the model on a real Triton Inference
Server: the artifact is exported (``guard export triton``) into a temporary model repository,
served by PyTriton's ``tritonserver`` from the Triton env (``make triton``), and ``guard serve
--upstream`` forwards every batch there (:mod:`server.upstream`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from guard.artifact import read_manifest
from guard.errors import ArtifactError, GuardError
from guard.types import FLAG_ADVERSARIAL, FLAG_AMBIGUOUS, FLAG_OOD  # the "flags" output's bits

if TYPE_CHECKING:
    from .upstream.launcher import TritonHost

DEFAULT_ARTIFACT = "artifacts/fmnist_resnet"
OUTPUTS = ("prediction", "logits", "margin_min", "hull_distance", "ambiguity", "abstain", "flags")
READY_TIMEOUT_S = 120.0
METRIC_PREFIXES = (
    "guard_requests_total",
    "guard_images_total",
    "guard_abstentions_total",
    "guard_flags_total",
    "guard_upstream_seconds_count",
    "guard_upstream_seconds_sum",
    "guard_upstream_errors_total",
)


class DemoError(Exception):
    """Something the demo cannot go on without (message is shown as one line)."""


# ---------------------------------------------------------------------------- command line
DESCRIPTION = (
    "Serve the built-in Fashion-MNIST guard over gRPC (fitting it on first use), "
    "query it with tritonclient with in-distribution images, out-of-distribution "
    "images and noise, and print what the guard decided."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifact",
        default=DEFAULT_ARTIFACT,
        help=f"artifact directory; fitted with the built-in model if it has no "
        f"manifest.json (default: {DEFAULT_ARTIFACT})",
    )
    p.add_argument(
        "--n-fmnist",
        type=int,
        default=200,
        help="Fashion-MNIST test images (in distribution, labelled; default 200)",
    )
    p.add_argument(
        "--n-digits",
        type=int,
        default=100,
        help="scikit-learn handwritten digits, resized to 28x28 (out of distribution; default 100)",
    )
    p.add_argument(
        "--n-noise",
        type=int,
        default=50,
        help="images of uniform noise and as many of Gaussian noise (default 50)",
    )
    p.add_argument(
        "--n-constant", type=int, default=5, help="constant images, black to white (default 5)"
    )
    p.add_argument("--rows", type=int, default=4, help="example rows shown per source (4)")
    p.add_argument("--batch-size", type=int, default=64, help="images per request (64)")
    p.add_argument("--seed", type=int, default=0, help="which images are drawn, and the noise")
    p.add_argument("--host", default="127.0.0.1", help="address the server binds (127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="gRPC port (0 = any free port)")
    p.add_argument(
        "--metrics-port", type=int, default=0, help="Prometheus metrics port (0 = any free port)"
    )
    p.add_argument(
        "--upstream",
        action="store_true",
        help="run the model on a real Triton Inference Server (the Triton env: `make triton`) "
        "with Guard in front of it as a proxy (guard serve --upstream)",
    )
    p.add_argument(
        "--keep-serving",
        action="store_true",
        help="leave the server running after the report until Ctrl-C",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="guard demo", description=DESCRIPTION)
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return cmd_demo(build_parser().parse_args(argv))


def cmd_demo(args: argparse.Namespace) -> int:
    """Check the counts, run the demo; errors are one line on stderr and exit code 2."""
    for name in ("n_fmnist", "n_digits", "n_noise", "n_constant", "rows"):
        if getattr(args, name) < 0:
            print(f"guard demo: error: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return 2
    if args.batch_size < 1:
        print("guard demo: error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (GuardError, DemoError, OSError) as exc:
        print(f"guard demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("guard demo: interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    if getattr(args, "upstream", False):
        from .upstream.launcher import check_triton_env

        check_triton_env()  # before any long work: say how to build it
    artifact = Path(args.artifact)
    t0 = time.perf_counter()
    ensure_artifact(artifact)
    manifest = read_manifest(artifact)  # checked here: a clearer error than the server's
    sources = load_sources(args.n_fmnist, args.n_digits, args.n_noise, args.n_constant, args.seed)
    model_name = artifact.resolve().name
    with contextlib.ExitStack() as stack:
        extra: list[str] = []
        if getattr(args, "upstream", False):
            triton = stack.enter_context(upstream_triton(artifact, model_name))
            extra = ["--upstream", triton.target, "--upstream-model", model_name]
        return serve_and_query(args, artifact, manifest, sources, model_name, extra, t0)
    raise AssertionError("unreachable")  # the with block returns


@contextlib.contextmanager
def upstream_triton(artifact: Path, model_name: str) -> Iterator[TritonHost]:
    """The artifact exported (``guard export triton``) into a temporary model repository and
    served by a real Triton Inference Server (the Triton env); stopped at the end."""
    from guard.artifact import load_artifact
    from guard.model.triton import export_triton

    from .upstream.launcher import TritonHost

    with tempfile.TemporaryDirectory(prefix="guard-demo-triton-") as tmp:
        guard = load_artifact(artifact, device="cpu")
        if guard.model_ is None or guard.reference_inputs_ is None:
            raise DemoError(f"{artifact} has no model to export")
        done = export_triton(guard.model_, Path(tmp) / "repo", model_name, guard.reference_inputs_)
        print(f"exported {artifact} for Triton: {done.config} + {done.model}")
        t = time.perf_counter()
        log = Path(tmp) / "triton.log"
        triton = TritonHost(done.directory.parent, [model_name], log=log).launch()
        try:
            triton.wait()
            print(
                f"Triton Inference Server (PyTriton's tritonserver) serving {model_name!r} on "
                f"{triton.target} (gRPC), started in {time.perf_counter() - t:.1f} s; Guard "
                f"forwards every batch there and adds the geometry"
            )
            yield triton
        finally:
            triton.stop()


def serve_and_query(
    args: argparse.Namespace,
    artifact: Path,
    manifest: dict,
    sources: list[Source],
    model_name: str,
    extra: list[str],
    t0: float,
) -> int:
    """Start ``guard serve`` (with ``extra`` flags), query it, stop it; the exit code."""
    import tritonclient.grpc as grpcclient  # after the fit: keeps `guard demo --help` fast
    from tritonclient.utils import InferenceServerException

    host = args.host
    port = args.port or free_port(host)
    metrics_port = args.metrics_port or free_port(host, avoid=port)
    with ServerProcess(artifact, host, port, metrics_port, model_name, extra) as srv:
        client = grpcclient.InferenceServerClient(url=f"{connect_host(host)}:{port}")
        srv.wait_ready(client)
        try:
            query(
                args,
                grpcclient,
                client,
                srv,
                sources,
                manifest,
                model_name,
                host,
                port,
                metrics_port,
            )
        except InferenceServerException as exc:
            raise DemoError(f"request failed: {exc}{srv.log_tail()}") from None
        finally:
            client.close()
        rc = srv.stop()
        if rc != 0:
            print(
                f"guard demo: error: server exited with code {rc} on SIGTERM{srv.log_tail()}",
                file=sys.stderr,
            )
            return 1
    print(f"server stopped cleanly on SIGTERM (exit 0); demo took {time.perf_counter() - t0:.1f} s")
    return 0


def query(
    args: argparse.Namespace,
    grpcclient,
    client,
    srv: ServerProcess,
    sources: list[Source],
    manifest: dict,
    model_name: str,
    host: str,
    port: int,
    metrics_port: int,
) -> None:
    """Metadata, inference on every source, the report, the metrics; then wait if asked."""
    print(f"server ready on {host}:{port} (model {model_name!r}, started in {srv.startup_s:.1f} s)")
    meta = client.get_model_metadata(model_name, as_json=True)
    input_meta = meta["inputs"][0]
    input_name = input_meta["name"]
    shape = [int(d) for d in input_meta["shape"]]
    if shape[1:] != [1, 28, 28]:
        raise DemoError(
            f"the demo sends 1x28x28 images, but model input {input_name!r} has shape {shape}"
        )
    available = {o["name"] for o in meta["outputs"]}
    missing = [n for n in OUTPUTS if n not in available]
    if missing:
        raise DemoError(f"the server does not offer outputs {missing} (geometry off?)")

    t_infer = time.perf_counter()
    n_requests = 0
    results = {}
    for src in sources:
        results[src.name], n = infer_all(
            grpcclient, client, model_name, input_name, src.x, args.batch_size
        )
        n_requests += n
    t_infer = time.perf_counter() - t_infer
    n_images = sum(len(s.x) for s in sources)

    print_report(sources, results, manifest, args.rows)
    print(
        f"\n{n_images} images in {n_requests} OIP ModelInfer requests (tritonclient.grpc) "
        f"in {t_infer:.2f} s"
    )
    metrics_url = f"http://{connect_host(host)}:{metrics_port}/metrics"
    print_metrics(metrics_url)

    if args.keep_serving:
        print(
            f"\nserver still running: gRPC {host}:{port} (Open Inference Protocol + "
            f"guard.v1), metrics {metrics_url}; Ctrl-C stops it"
        )
        proc = srv.proc
        assert proc is not None  # started by ServerProcess.__enter__
        try:
            while proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print()
        if proc.poll() is not None:
            raise DemoError(f"server exited on its own with code {proc.returncode}{srv.log_tail()}")


# ---------------------------------------------------------------------------- artifact
def ensure_artifact(artifact: Path) -> None:
    """Fit the built-in default guard into ``artifact`` unless it already holds a guard of the
    built-in model (an artifact of an older built-in model is refitted)."""
    from guard.defaults import DEFAULT_MODEL, default_guard
    from guard.model import sha256_bytes

    if (artifact / "manifest.json").is_file():
        is_default = artifact.resolve() == Path(DEFAULT_ARTIFACT).resolve()
        try:
            fitted = (read_manifest(artifact).get("model") or {}).get("sha256")
        except ArtifactError as exc:
            if not is_default:
                raise  # someone else's artifact: say what is wrong with it
            print(f"{artifact} is not usable ({exc}): refitting the built-in guard")
        else:
            if not DEFAULT_MODEL.is_file() or fitted == sha256_bytes(DEFAULT_MODEL.read_bytes()):
                return
            if not is_default:
                return  # someone else's artifact: serve it as it is
            print(f"{artifact} was fitted on an older built-in model: refitting")

    if not DEFAULT_MODEL.is_file():
        raise DemoError(
            f"the built-in model {DEFAULT_MODEL} is missing, so the default artifact "
            f"cannot be fitted (train it with scripts/train_default_model.py)"
        )
    print(
        f"{artifact} has no manifest.json: fitting the built-in guard (first run only, takes "
        f"a few minutes)"
    )
    t = time.perf_counter()
    default_guard(artifact)
    print(f"fitted {artifact} in {time.perf_counter() - t:.0f} s")


# ---------------------------------------------------------------------------- inputs
@dataclass
class Source:
    name: str
    what: str
    x: np.ndarray  # float32 [N, 1, 28, 28] in [0, 1]
    labels: list[str] | None  # what each image really is (for display)
    y: np.ndarray | None  # Fashion-MNIST class index, for accuracy (in distribution only)


def load_sources(
    n_fmnist: int, n_digits: int, n_noise: int, n_constant: int, seed: int
) -> list[Source]:
    from guard.datasets import (
        FASHION_MNIST_CLASSES,
        as_model_input,
        load_digits_28,
        load_fashion_mnist,
    )

    rng = np.random.default_rng(seed)
    out = []
    if n_fmnist:
        x, y = load_fashion_mnist("test")
        idx = np.sort(rng.choice(len(x), size=min(n_fmnist, len(x)), replace=False))
        out.append(
            Source(
                "fashion",
                "Fashion-MNIST test images (in distribution)",
                as_model_input(x[idx]),
                [FASHION_MNIST_CLASSES[i] for i in y[idx]],
                y[idx],
            )
        )
    if n_digits:
        x, y = load_digits_28()
        idx = np.sort(rng.choice(len(x), size=min(n_digits, len(x)), replace=False))
        out.append(
            Source(
                "digits",
                "handwritten digits 0-9 (scikit-learn, resized to 28x28; out of distribution)",
                as_model_input(x[idx]),
                [f"digit {d}" for d in y[idx]],
                None,
            )
        )
    if n_noise:
        shape = (n_noise, 1, 28, 28)
        out.append(
            Source(
                "uniform",
                "uniform noise in [0, 1]",
                rng.uniform(0.0, 1.0, shape).astype(np.float32),
                None,
                None,
            )
        )
        out.append(
            Source(
                "gaussian",
                "Gaussian noise, mean 0.5, sd 0.25, clipped to [0, 1]",
                np.clip(rng.normal(0.5, 0.25, shape), 0.0, 1.0).astype(np.float32),
                None,
                None,
            )
        )
    if n_constant:
        levels = np.linspace(0.0, 1.0, n_constant) if n_constant > 1 else np.zeros(1)
        x = np.broadcast_to(levels[:, None, None, None], (n_constant, 1, 28, 28))
        out.append(
            Source(
                "constant",
                "constant images, black to white",
                np.ascontiguousarray(x, dtype=np.float32),
                [f"all {v:.2f}" for v in levels],
                None,
            )
        )
    return out


# ---------------------------------------------------------------------------- server process
def free_port(host: str, avoid: int = -1) -> int:
    """A port nobody listens on now (the OS's pick), other than ``avoid``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((connect_host(host), 0))
            port = int(s.getsockname()[1])
        if port != avoid:
            return port


def connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else host


class ServerProcess:
    """``python -m server`` as a subprocess, its output in a temporary log file."""

    def __init__(
        self,
        artifact: Path,
        host: str,
        port: int,
        metrics_port: int,
        model_name: str,
        extra: list[str] | None = None,
    ) -> None:
        self.cmd = [
            sys.executable,
            "-m",
            "server",
            "--artifact",
            str(artifact),
            "--model-name",
            model_name,
            "--host",
            host,
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--http-port",
            "0",  # the demo speaks gRPC; HTTP on any free port, never a taken 8000
            *(extra or []),
        ]
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0
        self._log: IO[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self._log = tempfile.TemporaryFile(mode="w+b")
        self._t0 = time.perf_counter()
        # Own session: Ctrl-C reaches only the demo, which then stops the server with SIGTERM.
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:  # an error path: don't leak it
            self.stop()
        if self._log is not None:
            self._log.close()

    def log_tail(self, n: int = 30) -> str:
        if self._log is None or self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").splitlines()[-n:]
        return ("; server output:\n  " + "\n  ".join(lines)) if lines else ""

    def wait_ready(self, client, timeout_s: float = READY_TIMEOUT_S) -> None:
        from tritonclient.utils import InferenceServerException

        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise DemoError(
                    f"server exited with code {rc} before it was ready "
                    f"({' '.join(self.cmd)}){self.log_tail()}"
                )
            with contextlib.suppress(InferenceServerException):
                if client.is_server_ready(client_timeout=2.0):
                    self.startup_s = time.perf_counter() - self._t0
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"server not ready after {timeout_s:.0f} s{self.log_tail()}")
            time.sleep(0.25)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after ``timeout_s``)."""
        assert self.proc is not None
        return stop_process(self.proc, timeout_s)


def stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """SIGTERM ``proc`` if it runs, wait (SIGKILL after ``timeout_s``); its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


# ---------------------------------------------------------------------------- inference
def infer_all(
    grpcclient, client, model_name: str, input_name: str, x: np.ndarray, batch_size: int
) -> tuple[dict[str, np.ndarray], int]:
    """All of ``x`` in requests of ``batch_size`` images; the outputs concatenated."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in OUTPUTS}
    n_requests = 0
    for start in range(0, len(x), batch_size):
        chunk = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
        inp = grpcclient.InferInput(input_name, list(chunk.shape), "FP32")
        inp.set_data_from_numpy(chunk)
        outputs = [grpcclient.InferRequestedOutput(n) for n in OUTPUTS]
        result = client.infer(model_name, [inp], outputs=outputs, client_timeout=120.0)
        n_requests += 1
        for n in OUTPUTS:
            parts[n].append(result.as_numpy(n))
    return {n: np.concatenate(v) for n, v in parts.items()}, n_requests


# ---------------------------------------------------------------------------- report
def decision_text(abstain: bool, flags: int) -> str:
    reasons = [
        name for bit, name in ((FLAG_OOD, "ood"), (FLAG_AMBIGUOUS, "ambiguous")) if flags & bit
    ]
    parts = []
    if abstain:
        parts.append(f"ABSTAIN ({', '.join(reasons)})" if reasons else "ABSTAIN")
    if flags & FLAG_ADVERSARIAL:
        parts.append("FLAG adversarial")
    return " + ".join(parts) or "accept"


def _softmax_max(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).max(axis=1)


def example_rows(decisions: list[str], k: int) -> list[int]:
    """Up to ``k`` indices: the first image of each distinct decision, then the earliest ones."""
    chosen: list[int] = []
    for d in dict.fromkeys(decisions):
        if len(chosen) < k:
            chosen.append(decisions.index(d))
    for i in range(len(decisions)):
        if len(chosen) >= k:
            break
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen)


def _pct(mask: np.ndarray) -> str:
    return f"{100 * np.mean(mask):5.1f}%" if len(mask) else "    -"


def print_report(
    sources: list[Source], results: dict[str, dict[str, np.ndarray]], manifest: dict, rows: int
) -> None:
    names = manifest.get("class_names") or [str(i) for i in range(10)]
    t = (manifest.get("fitted") or {}).get("thresholds") or {}
    hull_t = t.get("hull")
    hull_txt = "off" if hull_t is None else f"{hull_t:.3f}"
    print()
    print(
        "What the guard reports per image, all distances in the model's feature space "
        "(penultimate layer):"
    )
    print(
        "  d_min = distance to the nearest decision boundary (how far the prediction is from "
        "flipping);"
    )
    print(
        "  hull  = certified distance to the convex hull of the training images' features "
        "(0 = inside what training covered);"
    )
    print(
        "  ambig = d_min - hull (negative: a decision boundary is closer than the training "
        "data, so the prediction is unsupported)."
    )
    if "ood.npz" in (manifest.get("files") or {}):
        rate = t.get("target_abstain_rate") or 0.05
        print(
            f"Decision rules (calibrated on {t.get('n_calib', 0)} held-out training images): "
            f"ABSTAIN (ood) when the p-value of the guard's combined out-of-distribution score "
            f"is below {rate:g} (so at most {100 * rate:g}% of in-distribution images "
            f"abstain); 'ambiguous' (ambig < {t.get('ambiguity', 0.0):g}) is reported; FLAG "
            f"adversarial if d_min < {t.get('d_min', 0.0):.3g} (the "
            f"{100 * (t.get('target_flag_rate') or 0):g}% lowest clean margins)."
        )
    else:
        print(
            f"Decision rules (thresholds calibrated on {t.get('n_calib', 0)} held-out training "
            f"images): ABSTAIN (ood) if hull > {hull_txt}; ABSTAIN (ambiguous) if ambig < "
            f"{t.get('ambiguity', 0.0):g}; FLAG adversarial if d_min < "
            f"{t.get('d_min', 0.0):.3g}."
        )
    if t.get("target_abstain_rate") is not None and "ood.npz" not in (manifest.get("files") or {}):
        print(
            f"  (hull threshold: {100 * t['target_abstain_rate']:g}% of clean in-distribution "
            f"images exceed it; d_min threshold: {100 * (t.get('target_flag_rate') or 0):g}% "
            f"of clean images fall below it)"
        )

    header = (
        f"{'source':<9} {'#':>4} {'true label':<12} {'prediction':<12} {'conf':>5} "
        f"{'d_min':>7} {'hull':>7} {'ambig':>8}  decision"
    )
    print()
    print(header)
    print("-" * (len(header) + 22))
    decisions: dict[str, list[str]] = {}
    for src in sources:
        r = results[src.name]
        conf = _softmax_max(r["logits"])
        dec = [decision_text(bool(a), int(f)) for a, f in zip(r["abstain"], r["flags"])]
        decisions[src.name] = dec
        for i in example_rows(dec, rows):
            label = src.labels[i] if src.labels is not None else "-"
            print(
                f"{src.name:<9} {i:>4} {label:<12} {names[int(r['prediction'][i])]:<12} "
                f"{conf[i]:5.2f} {r['margin_min'][i]:7.3f} {r['hull_distance'][i]:7.3f} "
                f"{r['ambiguity'][i]:8.3f}  {dec[i]}"
            )
    print(
        "(conf = the model's own softmax probability for its prediction, for comparison; the "
        "guard does not use it)"
    )

    print()
    print("Summary per source (medians over all images of the source):")
    head = (
        f"{'source':<9} {'n':>4} {'abstain':>7} {'(ood':>6} {'ambig)':>7} {'adv.flag':>8} "
        f"{'accuracy':>8} {'acc.accepted':>12} {'d_min':>7} {'hull':>7} {'ambig':>8} "
        f"{'conf':>5}"
    )
    print(head)
    print("-" * len(head))
    for src in sources:
        r = results[src.name]
        flags, abstain = r["flags"], r["abstain"].astype(bool)
        acc = acc_acc = "-"
        if src.y is not None:
            ok = r["prediction"] == src.y
            acc = _pct(ok)
            acc_acc = _pct(ok[~abstain]) + f" ({int((~abstain).sum())})"
        print(
            f"{src.name:<9} {len(flags):>4} {_pct(abstain):>7} {_pct(flags & FLAG_OOD > 0):>6} "
            f"{_pct(flags & FLAG_AMBIGUOUS > 0):>7} {_pct(flags & FLAG_ADVERSARIAL > 0):>8} "
            f"{acc:>8} {acc_acc:>12} {np.median(r['margin_min']):7.3f} "
            f"{np.median(r['hull_distance']):7.3f} {np.median(r['ambiguity']):8.3f} "
            f"{np.median(_softmax_max(r['logits'])):5.2f}"
        )
    print(
        "  (ood and ambig overlap; accuracy only for Fashion-MNIST, whose labels are known; "
        "acc.accepted = on the images the guard accepted (how many))"
    )
    print("\nIn words:")
    for src in sources:
        print(f"  {src.name:<9}{src.what}: {in_words(src, results[src.name])}")


def in_words(src: Source, r: dict[str, np.ndarray]) -> str:
    abstain = r["abstain"].astype(bool)
    flags = r["flags"]
    adv = flags & FLAG_ADVERSARIAL > 0
    conf = float(np.median(_softmax_max(r["logits"])))
    if src.y is not None:
        ok = r["prediction"] == src.y
        text = f"accepted {100 * np.mean(~abstain):.0f}%; accuracy {100 * np.mean(ok):.1f}% overall"
        if (~abstain).any():
            text += f", {100 * np.mean(ok[~abstain]):.1f}% on the accepted images"
        if abstain.any():
            text += f", {100 * np.mean(ok[abstain]):.1f}% on the abstained ones"
    else:
        text = (
            f"abstained on {100 * np.mean(abstain):.0f}% (out of distribution "
            f"{100 * np.mean(flags & FLAG_OOD > 0):.0f}%, ambiguous "
            f"{100 * np.mean(flags & FLAG_AMBIGUOUS > 0):.0f}%); the model's median "
            f"confidence was {conf:.2f}"
        )
    if adv.any():
        text += f"; {100 * np.mean(adv):.0f}% flagged adversarial (very small margin)"
    return text


def print_metrics(url: str) -> None:
    print(f"\nPrometheus metrics: {url} (selected lines)")
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
    except OSError as exc:
        print(f"  could not scrape the metrics: {exc}")
        return
    lines = [
        ln for ln in text.splitlines() if ln.startswith(METRIC_PREFIXES) and not ln.startswith("#")
    ]
    for ln in lines:
        print(f"  {ln}")
    if not lines:
        print("  (no guard_* counters found)")


if __name__ == "__main__":
    sys.exit(main())
