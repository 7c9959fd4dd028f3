"""Helpers shared by the benchmarks: timing, summary statistics, the machine description and the
result files (``<name>.json`` + ``<name>.md``).

Every figure is a median over repeats with its [min, max]; every comparison is a ratio measured
in the same run (the machine is shared, so absolute numbers drift between runs).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = "bench/results"


# ---------------------------------------------------------------------------- statistics
def stats(values: Iterable[float]) -> dict[str, float]:
    """``{median, min, max, n}`` of ``values`` (NaN entries are dropped; all NaN if empty)."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def timeit(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; seconds per call as
    ``{median, min, max, n}``."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(max(warmup, 0)):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return stats(times)


def scale(s: dict[str, float], factor: float) -> dict[str, float]:
    """A stats dict with median/min/max multiplied by ``factor`` (min/max swap if negative)."""
    lo, hi = s["min"] * factor, s["max"] * factor
    return {"median": s["median"] * factor, "min": min(lo, hi), "max": max(lo, hi), "n": s["n"]}


def rate(s: dict[str, float], work: float) -> dict[str, float]:
    """Seconds-per-call stats turned into ``work`` per second (the slowest call is the min)."""
    inv = [work / s[k] if s[k] > 0 else math.inf for k in ("median", "max", "min")]
    return {"median": inv[0], "min": inv[1], "max": inv[2], "n": s["n"]}


def is_stat(x: object) -> bool:
    return isinstance(x, dict) and {"median", "min", "max"} <= set(x)


def fmt_num(x: object, digits: int = 3) -> str:
    """Compact number: thousands separators from 1000 up, ``digits`` significant digits below."""
    if isinstance(x, bool) or x is None:
        return "-" if x is None else str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if abs(x) >= 10 ** (digits - 1):
            return f"{x:,.0f}"
        text = f"{x:#.{digits}g}"  # keep trailing zeros: 1.00, 0.0500
        return text[:-1] if text.endswith(".") else text
    return str(x)


def fmt_stat(s: object, digits: int = 3) -> str:
    """``median [min, max]`` for a stats dict, else the value itself."""
    if is_stat(s):
        return (
            f"{fmt_num(s['median'], digits)} [{fmt_num(s['min'], digits)}, "
            f"{fmt_num(s['max'], digits)}]"
        )
    return fmt_num(s, digits)


# ---------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - absent or broken: report as such
        return None
    return str(getattr(mod, "__version__", "?"))


def machine_info() -> dict[str, Any]:
    """CPU, cores, load, library versions, date and the exact command line."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        load = None
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "loadavg_1_5_15": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": _version("onnxruntime"),
        "faiss": _version("faiss"),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
    }


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])


# ---------------------------------------------------------------------------- results
def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, Path):
        return str(x)
    return x


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table over the union of the rows' keys (first-seen order)."""
    if not rows:
        return "_(no rows)_\n"
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = [fmt_stat(r.get(c, "")) if c in r else "" for c in cols]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    name: str,
    rows: list[dict],
    out_dir: str | Path = DEFAULT_OUT_DIR,
    *,
    title: str | None = None,
    sections: dict[str, list[dict]] | None = None,
    summary: dict[str, Any] | None = None,
    notes: list[str] | None = None,
    config: dict[str, Any] | None = None,
    rows_title: str = "Results",
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md``; returns both paths.

    ``rows`` is the main table; ``sections`` more tables (title -> rows); ``summary`` headline
    figures and verdicts; ``notes`` free text; ``config`` the settings of the run. Values that
    are stats dicts (``{median, min, max, n}``) are shown as ``median [min, max]``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    doc = {
        "name": name,
        "title": title or name,
        "machine": machine,
        "command": machine["command"],
        "config": config or {},
        "summary": summary or {},
        "rows_title": rows_title,
        "rows": rows,
        "sections": sections or {},
        "notes": notes or [],
    }
    jpath = out / f"{name}.json"
    jpath.write_text(json.dumps(_jsonable(doc), indent=2) + "\n")

    md = [f"# {title or name}", ""]
    md.append(
        f"Figures are medians over repeats with [min, max]. Run on {machine['cpu_model']} "
        f"({machine['cores']} cores, load average {machine['loadavg_1_5_15']}), Python "
        f"{machine['python']}, numpy {machine['numpy']}, onnxruntime "
        f"{machine['onnxruntime']}, faiss {machine['faiss']}, {machine['date']}."
    )
    md += ["", "```", machine["command"], "```", ""]
    if config:
        md += ["Settings: " + ", ".join(f"`{k}={_jsonable(v)}`" for k, v in config.items()), ""]
    if summary:
        md += ["## Summary", ""]
        md += [f"- **{k}**: {fmt_stat(v)}" for k, v in summary.items()]
        md.append("")
    md += [f"## {rows_title}", "", markdown_table(rows)]
    for sec_title, sec_rows in (sections or {}).items():
        md += [f"## {sec_title}", "", markdown_table(sec_rows)]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    mpath = out / f"{name}.md"
    mpath.write_text("\n".join(md))
    return jpath, mpath


def ensure_repo_on_path() -> None:
    """Let ``python bench/x.py`` import ``bench.*``, ``guard`` and ``server`` from the repo."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------- processes
def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size (``VmRSS`` of ``/proc/<pid>/status``) in bytes."""
    return _status_kb(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Peak resident set size (``VmHWM``) in bytes."""
    return _status_kb(pid, "VmHWM") * 1024


def _status_kb(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


_SERVING = re.compile(
    r"serving .*? on (\S+):(\d+) .*?(?:metrics http://\S+?:(\d+)/metrics|"
    r"metrics off)"
)


class ServerProc:
    """``python -m server`` as a subprocess on free ports (``--port 0``: the server picks the
    port and announces it in its ``serving`` line), output in a temporary log file.
    """

    def __init__(
        self,
        artifact: str | Path,
        *,
        geometry: bool = True,
        max_batch_size: int | None = None,
        max_queue_delay_ms: float | None = None,
        metrics: bool = True,
        model_name: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.cmd = [
            sys.executable,
            "-m",
            "server",
            "--artifact",
            str(artifact),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0" if metrics else "-1",
            "--http-port",
            "-1",  # the benchmarks measure the gRPC path
            "--log-level",
            "WARNING",
        ]
        if model_name:
            self.cmd += ["--model-name", model_name]
        if not geometry:
            self.cmd.append("--no-geometry")
        if max_batch_size is not None:
            self.cmd += ["--max-batch-size", str(max_batch_size)]
        if max_queue_delay_ms is not None:
            self.cmd += ["--max-queue-delay-ms", str(max_queue_delay_ms)]
        self.cmd += list(extra or [])
        self.proc: subprocess.Popen | None = None
        self.port = -1
        self.metrics_port = -1
        self.startup_s = math.nan
        self._log = None

    def start(self) -> ServerProc:
        self._log = tempfile.TemporaryFile(mode="w+b")
        self._t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        return self

    def log(self) -> str:
        if self._log is None or self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def wait_serving(self, timeout_s: float = 180.0) -> ServerProc:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            m = _SERVING.search(self.log())
            if m:
                self.port = int(m.group(2))
                self.metrics_port = int(m.group(3)) if m.group(3) else -1
                self.startup_s = time.perf_counter() - self._t0
                return self
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(
                    f"server exited with code {rc} before serving "
                    f"({' '.join(self.cmd)}):\n{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"server not serving after {timeout_s:.0f} s:\n{self.log()[-3000:]}"
                )
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss(self) -> int:
        assert self.proc is not None
        return rss_bytes(self.proc.pid)

    def scrape(self) -> dict[str, float]:
        """The server's Prometheus metrics as ``{sample name with labels: value}``."""
        import urllib.request

        if self.metrics_port < 0:
            return {}
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
        ) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
        return out

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait (SIGKILL after ``timeout_s``); returns the exit code."""
        from server.demo import stop_process

        if self.proc is None:
            return 0
        rc = stop_process(self.proc, timeout_s)
        if self._log is not None and not self._log.closed:
            self._log.close()
        return rc

    def __enter__(self) -> ServerProc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
