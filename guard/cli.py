"""Command line: ``guard fit``, ``guard score``, ``guard report``, ``guard info``. The installed
``guard`` command is :func:`server.cli.main`, which adds ``guard serve`` and ``guard demo`` through
the ``extra`` hook: arguments and printing only here.

Every error a user can cause is printed as one line (``guard: error: ...``) with exit code 2;
no tracebacks (set ``GUARD_DEBUG=1`` to see one for an unexpected failure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, cast

import numpy as np

from .errors import USER_ERRORS, ArtifactError, InputError
from .npz import load_npz
from .version import __version__

EXIT_USAGE = 2
#: A hook that adds subcommands (``subparsers.add_parser(...)`` with ``set_defaults(func=...)``).
AddCommands = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
EXIT_INTERNAL = 1


# --------------------------------------------------------------------------- option types
# argparse calls these on the option's text; an ArgumentTypeError becomes
# "guard: error: argument --NAME: MESSAGE" (see _Parser.error), exit code 2.
def _integer(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, counts)."""
    return _integer(text, 1, "positive")


def nonneg_int(text: str) -> int:
    """An integer >= 0 (0 = none / off)."""
    return _integer(text, 0, "non-negative")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A share in [0, 1) (0 = none)."""
    value = _number(text)
    if not 0 <= value < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def rate(text: str) -> float:
    """A target rate in (0, 1)."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1), got {text!r}")
    return value


def _n_jobs(text: str) -> int:
    """A thread count: >= 1, or negative (-1 = every core, -2 = all but one, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError(
            f"expected a thread count >= 1 or -1 (every core), got {text!r}"
        )
    return value


_N_JOBS_HELP = (
    "threads the geometry of each batch runs on (default -1: every core; 1: one thread); the "
    "results do not depend on it"
)


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: ``guard: error: ...``, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"guard: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- output paths
def check_out(path: str | Path, *, directory: bool) -> Path:
    """Refuse, before any long work, an ``--out`` that cannot be written.

    ``directory``: ``--out`` is a directory to create or fill (else a file). The nearest
    existing folder of the path must be a writable directory; a probe file is created there and
    removed (``os.access`` says yes to root even on a read-only file system).
    """
    out = Path(path)
    if out.is_dir() and not directory:
        raise InputError(f"cannot write --out {out}: it is a directory; expected a file path")
    if out.exists() and not out.is_dir() and directory:
        raise InputError(f"cannot write --out {out}: it is a file, not a directory")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write --out {out}: {folder} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot write --out {out}: {folder} is not writable ({exc.strerror or exc})"
        ) from None
    return out


def _labels(arrays: dict[str, np.ndarray], n: int) -> np.ndarray | None:
    y = arrays.get("y")
    if y is None:
        return None
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise InputError(f"expected integer labels 'y' of shape ({n},), got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def _class_names(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    path = Path(spec)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [s.strip() for s in spec.split(",")]


def cmd_fit(args: argparse.Namespace) -> int:
    from .artifact import save_artifact
    from .estimator import Guard
    from .model import OnnxClassifier

    if Path(args.out).exists() and not args.overwrite:  # refuse before the (long) fit
        raise ArtifactError(f"{args.out} already exists (pass --overwrite to replace)")
    check_out(args.out, directory=True)
    model = OnnxClassifier(args.model)
    data = load_npz(args.train, "x", ("y",))
    x = data["x"][: args.limit] if args.limit else data["x"]
    y = _labels(data, len(data["x"]))
    y = y[: len(x)] if y is not None else None
    x = model.prepare(x)  # bad inputs are refused first, as the fit would
    x_calib = model.prepare(load_npz(args.calib, "x")["x"]) if args.calib else None
    _check_calibration_size(args, len(x), None if x_calib is None else len(x_calib))
    nonneg = {"auto": None, "yes": True, "no": False}[args.nonneg]
    guard = Guard(
        nonneg=nonneg,
        hull_k=args.hull_k,
        hull_tol=args.hull_tol,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        calib_fraction=args.calib_fraction,
        target_abstain_rate=args.target_abstain_rate,
        target_flag_rate=args.target_flag_rate,
        ood=not args.no_ood,
        n_jobs=args.n_jobs,
    )
    guard.fit(model, x, y, x_calib=x_calib, class_names=_class_names(args.class_names))
    try:
        out = save_artifact(guard, args.out, overwrite=args.overwrite)
    except OSError as exc:
        raise InputError(f"cannot write --out {args.out}: {exc}") from None
    print(
        f"fitted {len(x)} training inputs: {model.n_features} features, {model.n_classes} "
        f"classes, nonneg={guard.nonneg_}, affine check error {guard.affine_error_:.1e}"
    )
    t = guard.thresholds_
    if t.n_calib:
        print(
            f"calibrated on {t.n_calib} held-out inputs: abstain when the p-value of the "
            f"combined OOD score < {t.target_abstain_rate:g}; flag adversarial when d_min < "
            f"{t.d_min:.4g} ({100 * (t.target_flag_rate or 0):g}% of clean margins are lower)"
        )
    else:
        print("no calibration data: only the ambiguity rule decides (hull threshold off)")
    print(f"artifact written to {out}")
    return 0


def _check_calibration_size(args: argparse.Namespace, n_train: int, n_given: int | None) -> None:
    """Refuse, before running the model, a calibration set too small for what it calibrates,
    saying what each part needs and how to fix it (``--calib``, ``--calib-fraction``, or
    fewer needed)."""
    from .detectors import MIN_CALIB

    if n_given is None and args.calib_fraction == 0:
        return  # no calibration asked for
    n_cal = n_given if n_given is not None else int(round(args.calib_fraction * n_train))
    needs = {
        f"--target-abstain-rate {args.target_abstain_rate:g}": math.ceil(
            1 / args.target_abstain_rate
        )
        - 1,
        f"--target-flag-rate {args.target_flag_rate:g}": math.ceil(1 / args.target_flag_rate) - 1,
    }
    if not args.no_ood:
        needs = {"the combined out-of-distribution score": MIN_CALIB} | needs
    need = max(max(needs.values()), 1)
    if n_cal >= need:
        return
    if n_given is not None:
        have = f"--calib has {n_cal} inputs"
        fixes = [f"pass a --calib file with at least {need} held-out in-distribution inputs"]
    else:
        have = (
            f"--calib-fraction {args.calib_fraction:g} of {n_train} training inputs holds "
            f"out {n_cal}"
        )
        fixes = [f"pass --calib FILE.npz with at least {need} held-out in-distribution inputs"]
        share = math.ceil(100 * need / n_train) / 100
        if share < 1 and n_train - round(share * n_train) >= 2:
            fixes.append(f"raise --calib-fraction to {share:g}")
    fixes.append(
        "need fewer: --no-ood (abstain on the calibrated hull distance instead of the "
        "combined score) and larger target rates"
    )
    fixes.append(
        "or fit without calibration: --calib-fraction 0"
        + (" and no --calib" if n_given is not None else "")
        + " (only the ambiguity rule decides)"
    )
    why = ", ".join(f"{what} needs {k}" for what, k in needs.items())
    raise InputError(
        f"calibration needs at least {need} held-out inputs ({why}), but {have}: "
        + "; ".join(fixes)
    )


def cmd_score(args: argparse.Namespace) -> int:
    from .artifact import load_artifact

    out = check_out(args.out, directory=False)
    guard = load_artifact(args.artifact, args.model, progress=not args.no_progress)
    guard.n_jobs = args.n_jobs
    if args.top_support is not None:
        guard.top_support = args.top_support
    if args.features:
        feats = load_npz(args.features, "f")["f"]
        scores = guard.score_features(feats)
    else:
        x = load_npz(args.input, "x")["x"]
        if guard.model_ is None:
            raise InputError("this artifact has no model; score it with --features")
        scores = guard.score(x)
    d = guard.decide(scores)
    arrays = scores.as_dict() | {
        "abstain": d.abstain,
        "adversarial": d.adversarial,
        "flags": d.flags,
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as fh:  # a path would get ".npz" appended when it lacks the suffix
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stub: **kwds typed as bool
    except OSError as exc:
        raise InputError(f"cannot write --out {out}: {exc}") from None
    print(summary_line(scores))
    print(f"scores written to {out}")
    return 0


def summary_line(scores) -> str:
    n = len(scores)
    return (
        f"scored {n}: median d_min {np.median(scores.d_min):.3f}, median hull distance "
        f"{np.median(scores.hull_upper):.3f}; outside hull (certified) "
        f"{100 * np.mean(scores.hull_lower > 0):.1f}%, hull closer than boundary "
        f"{100 * np.mean(scores.ambiguity > 0):.1f}%, in union of learned regions "
        f"{100 * np.mean(scores.in_union):.1f}%"
    )


def cmd_report(args: argparse.Namespace) -> int:
    from .artifact import load_artifact
    from .evaluation.report import build_report, builtin, from_files

    files = (args.train, args.test)
    if any(files) and not all(files):
        raise InputError(
            "pass both --train (the data given to guard fit) and --test, or "
            "neither for the built-in Fashion-MNIST sets"
        )
    if args.ood and not args.test:
        raise InputError("--ood needs --train and --test")
    check_out(args.out, directory=True)
    guard = load_artifact(args.artifact, args.model, progress=not args.no_progress)
    if guard.model_ is None:
        raise InputError("this artifact has no model; the report needs it to run the images")
    if args.test:
        data = from_files(args.train, args.test, args.ood, args.n_test, seed=args.seed)
    else:
        shape = tuple(guard.model_.input_shape[1:])
        if len(shape) != 3 or any(d not in (None, e) for d, e in zip(shape, (1, 28, 28))):
            raise InputError(
                f"the built-in Fashion-MNIST images are (1, 28, 28); this model "
                f"takes {shape}: pass --train and --test"
            )
        data = builtin(args.n_test, args.n_shift, seed=args.seed)
    guard.progress = not args.no_progress
    path = build_report(
        guard,
        data,
        args.out,
        n_calib=args.n_calib,
        n_pixel=args.n_pixel,
        includes=tuple(args.include),
        seed=args.seed,
        command="guard " + " ".join(sys.argv[1:] if args.argv is None else args.argv),
    )
    print(f"report written to {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .artifact import read_manifest

    print(json.dumps(read_manifest(args.artifact), indent=2))
    return 0


def cmd_export_triton(args: argparse.Namespace) -> int:
    from .artifact import load_artifact
    from .model.triton import export_triton

    repo = check_out(args.out, directory=True)
    guard = load_artifact(args.artifact, device="cpu")
    if guard.model_ is None or guard.reference_inputs_ is None:
        raise InputError(
            f"artifact {args.artifact} has no model (fitted from features): nothing to export"
        )
    name = args.name or Path(args.artifact).resolve().name
    done = export_triton(
        guard.model_,
        repo,
        name,
        guard.reference_inputs_,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        overwrite=args.overwrite,
    )
    shapes = ", ".join(f"{t.name} {list(t.dims)}" for t in done.outputs)
    print(f"wrote {done.config} and {done.model}")
    print(f"  input {done.input.name} {list(done.input.dims)}; outputs {shapes}")
    print(
        f"  serve it with Triton (copy {done.directory} into its model repository), then: "
        f"guard serve --artifact {args.artifact} --upstream HOST:8001 --upstream-model {name}"
    )
    return 0


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``guard export triton``: a model repository entry for an upstream model server."""
    e = sub.add_parser("export", help="export the guarded model for a model server")
    targets = e.add_subparsers(dest="target", required=True)
    t = targets.add_parser(
        "triton",
        help="a Triton model repository entry (config.pbtxt + 1/model.onnx with the features)",
        description="Write REPO/NAME/config.pbtxt and REPO/NAME/1/model.onnx: the artifact's "
        "model with its penultimate features as a second output, a dynamic batch axis and "
        "dynamic batching, for Triton (platform onnxruntime_onnx) or any Open Inference Protocol "
        "server; then put Guard in front of it with `guard serve --upstream`.",
    )
    t.add_argument("--artifact", required=True, help="artifact directory from guard fit")
    t.add_argument("--out", required=True, help="model repository directory (REPO)")
    t.add_argument("--name", help="model name in the repository (default: artifact dir name)")
    t.add_argument(
        "--max-batch-size", type=positive_int, default=64, help="Triton max_batch_size (64)"
    )
    t.add_argument(
        "--max-queue-delay-us",
        type=nonneg_int,
        default=0,
        help="Triton dynamic batching delay in microseconds (0)",
    )
    t.add_argument("--overwrite", action="store_true", help="replace an existing REPO/NAME")
    t.set_defaults(func=cmd_export_triton)


def build_parser(extra: AddCommands | None = None) -> argparse.ArgumentParser:
    """The ``guard`` parser; ``extra`` adds commands of other layers (the server adds ``serve``
    and ``demo``: the core never imports it)."""
    p = _Parser(prog="guard", description="Feature-space geometry of an ONNX image classifier.")
    p.add_argument("--version", action="version", version=f"guard {__version__}")
    # the subcommands' parsers are _Parser too (one-line errors); typed as the hook expects
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        p.add_subparsers(dest="command", required=True),
    )

    f = sub.add_parser("fit", help="fit the geometry of an ONNX classifier on training inputs")
    f.add_argument("--model", required=True, help="ONNX classifier ending in an affine layer")
    f.add_argument("--train", required=True, help=".npz with 'x' (model input) and optional 'y'")
    f.add_argument("--out", required=True, help="artifact directory to write")
    f.add_argument("--overwrite", action="store_true", help="replace an existing artifact")
    f.add_argument(
        "--nonneg",
        choices=["auto", "yes", "no"],
        default="auto",
        help="feature space x >= 0 (auto: detected from the training features)",
    )
    f.add_argument(
        "--hull-k",
        type=positive_int,
        default=64,
        help="size of the first hull working set (nearest points of a subsample, at most 16)",
    )
    f.add_argument(
        "--hull-tol", type=positive_float, default=1e-3, help="relative gap of hull bounds"
    )
    f.add_argument("--class-names", help="comma-separated names, or a file with one per line")
    f.add_argument("--batch-size", type=positive_int, default=256, help="model batch size")
    f.add_argument("--limit", type=positive_int, help="use only the first N training inputs")
    f.add_argument(
        "--calib",
        help=".npz with 'x': held-out in-distribution inputs that "
        "calibrate the decision thresholds (default: a split of --train)",
    )
    f.add_argument(
        "--calib-fraction",
        type=fraction,
        default=0.1,
        help="share of --train held out for calibration when --calib is not given "
        "(0: no calibration; in [0, 1))",
    )
    f.add_argument(
        "--target-abstain-rate",
        type=rate,
        default=0.05,
        help="false out-of-distribution abstain rate on in-distribution data",
    )
    f.add_argument(
        "--target-flag-rate",
        type=rate,
        default=0.01,
        help="false adversarial-flag rate on clean data",
    )
    f.add_argument(
        "--no-ood",
        action="store_true",
        help="no combined out-of-distribution score (it needs at least 100 calibration inputs): "
        "abstain when the hull distance exceeds its calibrated threshold",
    )
    f.add_argument("--n-jobs", type=_n_jobs, default=-1, help=_N_JOBS_HELP)
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=cmd_fit)

    s = sub.add_parser("score", help="score inputs (or features) with a fitted artifact")
    s.add_argument("--artifact", required=True)
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help=".npz with 'x' exactly as the model takes it")
    src.add_argument("--features", help=".npz with 'f' (N x feature dim) to skip the model")
    s.add_argument("--out", required=True, help="output .npz")
    s.add_argument("--model", help="check that this ONNX model is the one the artifact was fit on")
    s.add_argument("--top-support", type=nonneg_int, help="support points per input (default 8)")
    s.add_argument("--n-jobs", type=_n_jobs, default=-1, help=_N_JOBS_HELP)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_score)

    r = sub.add_parser(
        "report",
        help="write a Markdown report with figures: the paper's "
        "facts and plots, and the guard vs OOD peers, for a fitted artifact",
    )
    r.add_argument("--artifact", required=True)
    r.add_argument("--out", required=True, help="directory for report.md, report.json, PNGs")
    r.add_argument("--model", help="check that this ONNX model is the one the artifact was fit on")
    r.add_argument(
        "--train",
        help=".npz with 'x' (and 'y'): the data given to guard fit "
        "(default: the built-in Fashion-MNIST training set)",
    )
    r.add_argument("--test", help=".npz with 'x' and 'y': labelled test data")
    r.add_argument(
        "--ood",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help=".npz with 'x' of out-of-distribution inputs (repeatable)",
    )
    r.add_argument("--n-test", type=positive_int, default=2000, help="test images (seeded subset)")
    r.add_argument(
        "--n-calib",
        type=nonneg_int,
        default=2000,
        help="held-out training inputs that calibrate the peers' thresholds",
    )
    r.add_argument(
        "--n-shift",
        type=nonneg_int,
        default=1000,
        help="images per covariate shift (built-in data only; 0: none)",
    )
    r.add_argument(
        "--n-pixel",
        type=nonneg_int,
        default=300,
        help="test images projected onto the pixel-space training hull",
    )
    r.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="FILE.md",
        help="append another evaluation's Markdown (repeatable)",
    )
    r.add_argument("--seed", type=nonneg_int, default=0)
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_report)

    i = sub.add_parser("info", help="print an artifact's manifest")
    i.add_argument("--artifact", required=True)
    i.set_defaults(func=cmd_info)

    _add_export(sub)

    from .inversion.cli import add_explain_command  # torch / matplotlib only when it runs

    add_explain_command(sub)

    if extra is not None:
        extra(sub)
    return p


def main(argv: list[str] | None = None, extra: AddCommands | None = None) -> int:
    """Run one command; user errors print one line and exit 2 (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(extra).parse_args(argv)
    except SystemExit as exc:  # --help / --version (0), or a usage error already printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = argv
    try:
        return int(args.func(args))
    except USER_ERRORS as exc:
        print(f"guard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("guard: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        if os.environ.get("GUARD_DEBUG"):
            raise
        print(
            f"guard: internal error: {type(exc).__name__}: {exc} (GUARD_DEBUG=1 shows the "
            f"traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
