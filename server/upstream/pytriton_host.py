"""A real Triton Inference Server serving exported models: what the upstream-mode tests,
``guard demo --upstream`` and ``bench/serve.py --upstream`` put behind the proxy.

PyTriton (``nvidia-pytriton``) ships a real ``tritonserver`` with its Python backend only (no
ONNX Runtime backend), so each model of a repository written by ``guard export triton`` is served
by running its ``1/model.onnx`` with onnxruntime inside a PyTriton ``@batch`` callable. The
inputs, outputs, ``max_batch_size`` and dynamic batching are read from its ``config.pbtxt``
(parsed as Triton's ``ModelConfig``), so a config that disagrees with the graph fails here.

Runs in the Triton env (``.venv-triton``, ``make triton``), NOT the project's: it imports
nothing of ``guard`` or ``server``::

    .venv-triton/bin/python server/upstream/pytriton_host.py --repo REPO \\
        --grpc-port 8101 --http-port 8100 --metrics-port 8102 [--model NAME[=ALT]] ...

``--model NAME=ALT`` serves ``REPO/NAME`` as NAME, but once the file ``--switch-file`` exists it
answers with ``REPO/ALT``'s graph instead: a model replaced behind the proxy without a restart
(what the per-batch check must catch). Prints ``READY`` on stdout once every model is loaded,
and nothing else there (tritonserver's log and everything else go to stderr); stops on SIGTERM /
SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnxruntime as ort
from google.protobuf import text_format
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tritonclient.grpc import model_config_pb2

_DTYPES = {
    model_config_pb2.TYPE_FP32: np.float32,
    model_config_pb2.TYPE_FP64: np.float64,
    model_config_pb2.TYPE_FP16: np.float16,
    model_config_pb2.TYPE_INT64: np.int64,
    model_config_pb2.TYPE_INT32: np.int32,
    model_config_pb2.TYPE_BOOL: np.bool_,
    model_config_pb2.TYPE_UINT8: np.uint8,
}


def read_config(entry: Path) -> Any:
    """``entry/config.pbtxt`` as Triton's ModelConfig (a parse error names the file)."""
    config = model_config_pb2.ModelConfig()
    text_format.Parse((entry / "config.pbtxt").read_text(), config)
    if config.platform != "onnxruntime_onnx":
        raise SystemExit(f"{entry}: platform {config.platform!r}, expected onnxruntime_onnx")
    return config


def _session(entry: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("PYTRITON_ORT_THREADS", "1"))
    return ort.InferenceSession(
        str(entry / "1" / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )


def _tensors(specs: Any) -> list[Tensor]:
    return [Tensor(name=t.name, dtype=_DTYPES[t.data_type], shape=tuple(t.dims)) for t in specs]


def make_infer(entry: Path, alt: Path | None, switch: Path | None, config: Any) -> Any:
    """The ``@batch`` callable: onnxruntime on ``entry``'s model (``alt``'s once ``switch``
    exists); the outputs Triton asked for are the config's."""
    sessions = {False: _session(entry), True: _session(alt) if alt else None}
    inputs = [t.name for t in config.input]
    outputs = [t.name for t in config.output]
    lock = threading.Lock()  # one session run at a time: PyTriton may call from several threads

    @batch
    def infer(**tensors: np.ndarray) -> dict[str, np.ndarray]:
        use_alt = bool(alt and switch and switch.exists())
        session = sessions[use_alt] or sessions[False]
        feed = {name: tensors[name] for name in inputs}
        with lock:
            values = session.run(outputs, feed)
        return dict(zip(outputs, values))

    return infer


def _ready_channel() -> TextIO:
    """The parent's stdout pipe, kept for the READY line alone; this process's fd 1 then points
    at stderr, so tritonserver (which inherits it and logs there) and everything else printed go
    to the log. On one shared pipe a log line written at the same moment once split the READY
    line ("...successfully loaded 'sREADY"), and the parent never saw it."""
    sys.stdout.flush()
    ready = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return ready


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", required=True, help="model repository from guard export triton")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[=ALT]",
        help="serve REPO/NAME (default: every entry); =ALT: answer with REPO/ALT once "
        "--switch-file exists",
    )
    p.add_argument("--switch-file", help="see --model NAME=ALT")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    ready = _ready_channel()
    logging.basicConfig(level=logging.WARNING)
    repo = Path(args.repo)
    specs = args.model or sorted(d.name for d in repo.iterdir() if (d / "config.pbtxt").is_file())
    switch = Path(args.switch_file) if args.switch_file else None
    config = TritonConfig(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        grpc_address=args.host,
        http_address=args.host,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        for spec in specs:
            name, _, alt_name = spec.partition("=")
            entry = repo / name
            model_config = read_config(entry)
            alt = repo / alt_name if alt_name else None
            triton.bind(
                model_name=name,
                infer_func=make_infer(entry, alt, switch, model_config),
                inputs=_tensors(model_config.input),
                outputs=_tensors(model_config.output),
                config=ModelConfig(
                    max_batch_size=model_config.max_batch_size,
                    batcher=DynamicBatcher(
                        max_queue_delay_microseconds=(
                            model_config.dynamic_batching.max_queue_delay_microseconds
                        )
                    ),
                ),
                strict=True,
            )
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        triton.run()  # started in the background; models loaded
        ready.write("READY\n")  # the parent waits for this line
        ready.flush()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
