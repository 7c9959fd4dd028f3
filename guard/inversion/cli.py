"""``guard explain``: one image back in pixels (arguments and printing only; the work is
:func:`guard.inversion.explain.explain` and :func:`guard.inversion.render.write_explanation`).

:mod:`guard.cli` registers the command with :func:`add_explain_command`; this module does not
import :mod:`guard.cli` back (the import graph has no cycles), so it has its own option types.
Importing it imports neither torch nor matplotlib (``guard --help`` stays fast and works
without them); the command checks for them first and says how to install what is missing.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["add_explain_command", "cmd_explain"]


def _number(text: str, ok: Any, what: str, kind: type = float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, lambda v: math.isfinite(v) and v > 0, "a positive number")


def _count(text: str) -> int:
    return _number(text, lambda v: v >= 0, "a non-negative integer", int)


def _positive_int(text: str) -> int:
    return _number(text, lambda v: v >= 1, "a positive integer", int)


def _out_dir(path: str) -> Path:
    """``--out`` created (or existing) and writable, checked before any long work."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise InputError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    return out


def _domain(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"expected LO < HI, got {text!r}")
    return lo, hi


def cmd_explain(args: argparse.Namespace) -> int:
    from ..artifact import load_artifact
    from ..model.torch_twin import require_torch
    from ..npz import load_npz

    require_torch()
    try:
        import matplotlib  # noqa: F401 - checked here, used by the figures
    except ImportError:
        raise InputError(
            "guard explain draws figures: pip install 'guard-classifier[eval]'"
        ) from None
    from .explain import ExplainConfig, explain
    from .render import write_explanation
    from .solver import SolverConfig

    out = _out_dir(args.out)
    data = load_npz(args.input, "x")
    x = data["x"]
    if not 0 <= args.index < len(x):
        raise InputError(f"--index {args.index} is outside the {len(x)} inputs of {args.input}")
    guard = load_artifact(args.artifact, progress=not args.no_progress)
    model = guard.require_model()
    x_train = _training_data(args, guard)
    cfg = ExplainConfig(
        n_perimeter=args.n_perimeter,
        n_morph=args.n_morph,
        time_budget_s=args.time_budget_s,
        solver=SolverConfig(
            rtol=args.rtol,
            bounds=args.domain,
            max_seconds=args.solve_budget_s,
        ),
    )
    e = explain(
        guard,
        model.prepare(x[args.index : args.index + 1])[0],
        x_train=x_train,
        config=cfg,
        progress=not args.no_progress,
    )
    command = "guard " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    path = write_explanation(e, out, command=command)
    n_met = sum(s.inversion.met for s in e.solves)
    print(
        f"class {e.class_names[e.pred]}, d_min {e.d_min:.4f} to {e.class_names[e.nearest_class]}, "
        f"hull distance {e.hull_upper:.4f}; {len(e.solves)} pre-images, {n_met} met their "
        f"tolerance"
    )
    for s in e.solves:
        inv = s.inversion
        print(
            f"  {s.name:<24} residual {inv.feature_residual:.3g} / tol {inv.tolerance:.3g} "
            f"{'met' if inv.met else 'NOT MET'}, pixel distance {inv.pixel_distance:.4g}, "
            f"class {e.class_names[s.predicted_class]} ({inv.seconds:.1f} s)"
        )
    for note in e.notes:
        print(f"  note: {note}")
    print(f"explanation written to {path}")
    return 0


def _training_data(args: argparse.Namespace, guard: Any) -> np.ndarray | None:
    """``--train``, the built-in Fashion-MNIST for a 1x28x28 model, or None (``--no-train``)."""
    from ..npz import load_npz

    if args.no_train:
        return None
    if args.train:
        return load_npz(args.train, "x")["x"]
    shape = tuple(guard.model_.input_shape[1:])
    if len(shape) == 3 and all(d in (None, e) for d, e in zip(shape, (1, 28, 28))):
        from ..evaluation.sets import fmnist_train

        return fmnist_train(None)[0]
    raise InputError(
        f"the built-in Fashion-MNIST images are (1, 28, 28); this model takes {shape}: pass "
        f"--train (the data given to guard fit) or --no-train"
    )


def add_explain_command(sub: Any) -> None:
    """Register ``guard explain`` on the ``guard`` parser's subcommands."""
    e = sub.add_parser(
        "explain",
        help="one image back in pixels: pre-images of its flip point, hull projection, ball "
        "perimeter and a morph (paper section 7.1); Markdown, PNG, NPY and JSON",
    )
    e.add_argument("--artifact", required=True)
    e.add_argument("--input", required=True, help=".npz with 'x' exactly as the model takes it")
    e.add_argument("--index", type=_count, default=0, help="which input of --input")
    e.add_argument("--out", required=True, help="directory for explain.md, explain.json, images")
    e.add_argument(
        "--train",
        help=".npz with 'x': the data given to guard fit (support images, morph, references; "
        "default: the built-in Fashion-MNIST for a 1x28x28 model)",
    )
    e.add_argument("--no-train", action="store_true", help="no training images (fewer figures)")
    e.add_argument(
        "--time-budget-s",
        type=_positive_float,
        help="wall-clock budget of all pre-images (later ones are skipped and listed)",
    )
    e.add_argument(
        "--solve-budget-s",
        type=_positive_float,
        default=180.0,
        help="wall-clock budget of one pre-image (default 180; a solve out of time returns "
        "its best iterate, judged like any other)",
    )
    e.add_argument(
        "--rtol",
        type=_positive_float,
        default=1e-3,
        help="a pre-image meets its target when the feature residual <= rtol x the "
        "reference's residual (+1e-5)",
    )
    e.add_argument(
        "--domain",
        type=_domain,
        default=(0.0, 1.0),
        metavar="LO,HI",
        help="range of every input value the pre-images are searched in (default 0,1)",
    )
    e.add_argument("--n-perimeter", type=_count, default=4, help="perimeter references")
    e.add_argument("--n-morph", type=_positive_int, default=6, help="morph steps")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_explain)
