"""Helpers of the deploy tests: the repository's paths, loading the scripts of ``deploy/`` (they
are files, not a package), free ports, HTTP GETs of JSON, and the images the tests send."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load_script(relative: str) -> ModuleType:
    """The module of ``deploy/<relative>`` (e.g. ``prometheus/make_rules.py``)."""
    path = DEPLOY / relative
    name = "deploy_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port free on the loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    """Poll ``check()`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # not listening yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


def fmnist_test_images(n: int) -> np.ndarray:
    """``n`` Fashion-MNIST test images as the built-in model takes them (float32 N x 1 x 28 x 28,
    in [0, 1]): in distribution."""
    from guard.datasets import as_model_input, load_fashion_mnist

    x, _ = load_fashion_mnist("test")
    return np.ascontiguousarray(as_model_input(x[:n]), dtype=np.float32)


def digit_images(n: int) -> np.ndarray:
    """``n`` of scikit-learn's handwritten digits resized to 28 x 28: out of distribution."""
    from guard.datasets import as_model_input, load_digits_28

    x, _ = load_digits_28()
    return np.ascontiguousarray(as_model_input(x[:n]), dtype=np.float32)
