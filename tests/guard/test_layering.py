"""The geometry core stays free of the serving stack (and of torch unless asked for)."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_grpc_prometheus_or_torch():
    code = (
        "import sys, guard, guard.cli, guard.defaults, guard.datasets, guard.model.export;"
        "bad = [m for m in ('grpc', 'prometheus_client', 'torch') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
