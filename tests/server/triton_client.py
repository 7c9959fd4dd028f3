"""Standalone Triton client run as a subprocess by ``test_tritonclient.py``.

It imports only ``tritonclient.grpc``, numpy and json: tritonclient's generated ``inference``
protos and the server's own (``server/gen``) register the same names in protobuf's default
descriptor pool, so the two can never share a process.

Usage: ``python triton_client.py URL MODEL MODES INPUTS.npz OUT_DIR``

* ``MODES``: comma-separated subset of ``health,metadata,infer,filter,uint8,error``.
* ``INPUTS.npz``: ``x_fp32`` (float32 images) and ``x_uint8`` (uint8 images), same shape.
* writes ``OUT_DIR/results.json`` (everything that is not an array) and ``OUT_DIR/outputs.npz``
  (``<mode>/<output name>`` arrays).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

FILTERED = ["prediction", "hull_distance"]


def _outputs(result) -> dict[str, np.ndarray]:  # noqa: ANN001
    resp = result.get_response()
    return {o.name: result.as_numpy(o.name) for o in resp.outputs}


def main(argv: list[str]) -> int:
    url, model, modes, inputs_path, out_dir = argv
    modes = set(modes.split(","))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = np.load(inputs_path)
    x32, x8 = data["x_fp32"], data["x_uint8"]
    client = grpcclient.InferenceServerClient(url=url)
    res: dict = {}
    arrays: dict[str, np.ndarray] = {}

    if "health" in modes:
        res["server_live"] = client.is_server_live()
        res["server_ready"] = client.is_server_ready()
        res["model_ready"] = client.is_model_ready(model)
        res["other_model_ready"] = client.is_model_ready(model + "-does-not-exist")

    md = client.get_model_metadata(model, as_json=True)
    input_name = md["inputs"][0]["name"]
    if "metadata" in modes:
        res["server_metadata"] = client.get_server_metadata(as_json=True)
        res["model_metadata"] = md

    def infer(x: np.ndarray, datatype: str, names: list[str] | None):  # noqa: ANN202
        inp = grpcclient.InferInput(input_name, list(x.shape), datatype)
        inp.set_data_from_numpy(x)
        outs = None if names is None else [grpcclient.InferRequestedOutput(n) for n in names]
        return _outputs(client.infer(model, [inp], outputs=outs))

    for mode, x, dt, names in (("infer", x32, "FP32", None), ("filter", x32, "FP32", FILTERED),
                               ("uint8", x8, "UINT8", None)):
        if mode in modes:
            got = infer(x, dt, names)
            res[f"{mode}_outputs"] = {k: [str(v.dtype), list(v.shape)] for k, v in got.items()}
            arrays.update({f"{mode}/{k}": v for k, v in got.items()})

    if "error" in modes:
        errors = {}
        for case, call in (
            ("unknown_model_infer", lambda: client.infer(
                model + "-does-not-exist",
                [_input(input_name, x32)])),
            ("unknown_model_metadata", lambda: client.get_model_metadata(
                model + "-does-not-exist")),
            ("bad_shape", lambda: client.infer(model, [_input(input_name, x32.reshape(
                len(x32), -1))])),
        ):
            try:
                call()
                errors[case] = None
            except InferenceServerException as exc:
                errors[case] = {"status": exc.status(), "message": exc.message()}
        res["errors"] = errors

    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    np.savez(out / "outputs.npz", **arrays)
    return 0


def _input(name: str, x: np.ndarray):  # noqa: ANN202
    inp = grpcclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
