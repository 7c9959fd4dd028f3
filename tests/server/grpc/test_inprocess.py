"""The server through our own generated stubs (grpc.aio): typed inputs, guard.v1, health,
reflection, and every kind of bad request -> the right status code and a helpful message."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.grpc.gen.guard_v1 import guard_pb2 as gpb
from server.grpc.gen.inference import grpc_service_pb2 as pb

from ..helpers import (
    INPUT_NAME,
    MODEL,
    Stubs,
    assert_outputs_match,
    classify_request,
    decode,
    expect_error,
    expected,
    images,
    infer_request,
    run,
)

OIP = "inference.GRPCInferenceService"
GUARD = "guard.v1.GuardService"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def _with_stubs(target: str, fn):
    async with grpc.aio.insecure_channel(target) as ch:
        return await fn(Stubs(ch))


def test_input_name_is_the_models(server):
    assert server.srv.model.input_name == INPUT_NAME


def test_typed_fp32_contents(server, guard):
    x = images(3, seed=21)

    async def go(s: Stubs):
        return decode(
            await s.oip.ModelInfer(
                infer_request(
                    x,
                    typed=True,
                    outputs=[
                        "logits",
                        "prediction",
                        "margin_min",
                        "hull_distance",
                        "margins",
                        "support_indices",
                        "support_weights",
                        "flags",
                    ],
                )
            )
        )

    got = run(_with_stubs(server.target, go))
    assert_outputs_match(got, expected(guard, x))


def test_typed_uint8_contents(server, guard):
    x8 = np.random.default_rng(3).integers(0, 256, size=(2, 1, 6, 6), dtype=np.uint8)
    req = infer_request(shape=list(x8.shape), datatype="UINT8", raw=b"")
    del req.raw_input_contents[:]
    req.inputs[0].contents.uint_contents.extend(x8.ravel().tolist())
    got = run(_with_stubs(server.target, lambda s: s.oip.ModelInfer(req)))
    assert_outputs_match(decode(got), expected(guard, x8.astype(np.float32) / 255.0))


def test_response_echoes_model_and_id(server):
    req = infer_request(images(1, seed=2))
    req.id = "req-42"
    resp = run(_with_stubs(server.target, lambda s: s.oip.ModelInfer(req)))
    assert (resp.model_name, resp.model_version, resp.id) == (MODEL, "1", "req-42")


def test_classify_matches_guard(server, guard):
    # random inputs (some ambiguous) and far-away ones (out of distribution)
    x = np.concatenate([images(4, seed=7), 6.0 * images(2, seed=8)])
    resp = run(_with_stubs(server.target, lambda s: s.guard.Classify(classify_request(x))))
    want = expected(guard, x)
    assert resp.model_name == MODEL
    assert len(resp.results) == len(x)
    assert any(r.decision.abstain for r in resp.results)
    assert any(r.decision.flags & 2 for r in resp.results)  # out of distribution
    for i, r in enumerate(resp.results):
        assert r.prediction == want["prediction"][i]
        assert r.class_name == guard.class_names_[want["prediction"][i]]
        np.testing.assert_allclose(r.logits, want["logits"][i], rtol=1e-6)
        np.testing.assert_allclose(r.margins, want["margins"][i], rtol=1e-9, equal_nan=True)
        assert np.isnan(r.margins[r.prediction])
        for field, key in (
            ("margin_min", "margin_min"),
            ("hull_distance", "hull_distance"),
            ("hull_lower", "hull_lower"),
            ("ambiguity", "ambiguity"),
            ("union_slack", "union_slack"),
            ("ood_score", "ood_score"),
            ("p_value", "p_value"),
        ):
            np.testing.assert_allclose(
                getattr(r, field), want[key][i], rtol=1e-9, atol=1e-12, err_msg=field
            )
        assert r.nearest_class == want["nearest_class"][i]
        assert r.in_union == bool(want["in_union"][i])
        assert r.n_balls == want["n_balls"][i]
        idx, w = want["support_indices"][i], want["support_weights"][i]
        keep = idx >= 0
        assert [p.index for p in r.support] == idx[keep].tolist()
        np.testing.assert_allclose([p.weight for p in r.support], w[keep], rtol=1e-9)
        d = r.decision
        assert d.abstain == bool(want["abstain"][i])
        assert d.adversarial == bool(want["adversarial"][i])
        assert d.flags == int(want["flags"][i])
        assert list(d.reasons) == want["reasons"][i]
        assert len(d.reasons) == bin(d.flags).count("1")


def test_classify_model_name(server):
    x = images(1, seed=1)

    async def go(s: Stubs):
        ok = await s.guard.Classify(classify_request(x, model=MODEL))
        details = await expect_error(
            s.guard.Classify(classify_request(x, model="other")), grpc.StatusCode.NOT_FOUND
        )
        return ok, details

    ok, details = run(_with_stubs(server.target, go))
    assert len(ok.results) == 1
    assert "'other'" in details and repr(MODEL) in details


def test_get_info(server, guard):
    async def go(s: Stubs):
        info = await s.guard.GetInfo(gpb.InfoRequest())
        named = await s.guard.GetInfo(gpb.InfoRequest(model_name=MODEL))
        details = await expect_error(
            s.guard.GetInfo(gpb.InfoRequest(model_name="x")), grpc.StatusCode.NOT_FOUND
        )
        return info, named, details

    info, named, details = run(_with_stubs(server.target, go))
    assert info == named
    assert "unknown model" in details
    t = guard.thresholds_
    th = info.thresholds
    assert th.ambiguity == t.ambiguity
    assert th.hull == t.hull
    assert th.d_min == t.d_min
    assert th.target_abstain_rate == (t.target_abstain_rate or 0.0)
    assert th.target_flag_rate == (t.target_flag_rate or 0.0)
    assert th.n_calib == t.n_calib
    assert info.model_name == MODEL
    assert info.model_sha256 == guard.model_.sha256
    assert list(info.input_shape) == [-1, 1, 6, 6]
    assert list(info.class_names) == list(guard.class_names_)
    assert info.n_features == guard.W_.shape[1]
    assert info.n_train == len(guard.radii_)
    assert info.geometry is True
    from guard import __version__

    assert info.guard_version == __version__


def test_oip_health_and_metadata(server):
    async def go(s: Stubs):
        live = await s.oip.ServerLive(pb.ServerLiveRequest())
        ready = await s.oip.ServerReady(pb.ServerReadyRequest())
        mready = await s.oip.ModelReady(pb.ModelReadyRequest(name=MODEL))
        other = await s.oip.ModelReady(pb.ModelReadyRequest(name="nope"))
        md = await s.oip.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))
        details = await expect_error(
            s.oip.ModelMetadata(pb.ModelMetadataRequest(name="nope")), grpc.StatusCode.NOT_FOUND
        )
        return live, ready, mready, other, md, details

    live, ready, mready, other, md, details = run(_with_stubs(server.target, go))
    assert live.live and ready.ready and mready.ready and not other.ready
    assert md.inputs[0].name == INPUT_NAME and list(md.inputs[0].shape) == [-1, 1, 6, 6]
    assert "'nope'" in details


def test_grpc_health_service(server):
    async def go():
        async with grpc.aio.insecure_channel(server.target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            got = {}
            for name in ("", OIP, GUARD):
                got[name] = (await stub.Check(health_pb2.HealthCheckRequest(service=name))).status
            code = None
            try:
                await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            return got, code

    got, unknown = run(go())
    assert all(v == health_pb2.HealthCheckResponse.SERVING for v in got.values()), got
    assert unknown == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services(server):
    async def go():
        async with grpc.aio.insecure_channel(server.target) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            call = stub.ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            resp = await call.read()
            await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=GUARD))
            files = await call.read()
            await call.done_writing()
            return resp, files

    resp, files = run(go())
    names = {s.name for s in resp.list_services_response.service}
    assert {
        OIP,
        GUARD,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    assert files.file_descriptor_response.file_descriptor_proto  # the schema is retrievable


# ------------------------------------------------------------------ bad requests
def _x(n: int = 2) -> np.ndarray:
    return images(n, seed=99)


def _nan() -> np.ndarray:
    x = _x()
    x[1, 0, 2, 3] = np.nan
    return x


def _inf() -> np.ndarray:
    x = _x()
    x[0, 0, 0, 0] = -np.inf
    return x


def _two_inputs() -> pb.ModelInferRequest:
    req = infer_request(_x())
    req.inputs.add(name="y", datatype="FP32", shape=[2, 1, 6, 6])
    req.raw_input_contents.append(_x().tobytes())
    return req


def _two_raw() -> pb.ModelInferRequest:
    req = infer_request(_x())
    req.raw_input_contents.append(_x().tobytes())
    return req


def _typed_count() -> pb.ModelInferRequest:
    req = infer_request(_x(), typed=True)
    req.inputs[0].contents.fp32_contents.append(1.0)
    return req


def _uint8_range() -> pb.ModelInferRequest:
    req = infer_request(shape=[1, 1, 6, 6], datatype="UINT8", raw=b"")
    del req.raw_input_contents[:]
    req.inputs[0].contents.uint_contents.extend([300] + [0] * 35)
    return req


# (id, request factory, code, substrings the message must contain)
BAD_INFER = [
    (
        "wrong_rank",
        lambda: infer_request(_x(), shape=[2, 36]),
        INVALID,
        ["shape [2, 36]", "[-1, 1, 6, 6]"],
    ),
    (
        "wrong_dim",
        lambda: infer_request(_x().reshape(2, 1, 4, 9)),
        INVALID,
        ["shape [2, 1, 4, 9]", "[-1, 1, 6, 6]"],
    ),
    (
        "int64",
        lambda: infer_request(_x().astype(np.int64), datatype="INT64"),
        INVALID,
        ["'INT64'", "FP32"],
    ),
    (
        "fp16",
        lambda: infer_request(_x().astype(np.float16), datatype="FP16"),
        INVALID,
        ["'FP16'", "FP32"],
    ),
    ("nan", lambda: infer_request(_nan()), INVALID, ["NaN"]),
    ("inf", lambda: infer_request(_inf()), INVALID, ["Inf"]),
    (
        "empty_batch",
        lambda: infer_request(np.zeros((0, 1, 6, 6), np.float32)),
        INVALID,
        ["empty batch", "[0, 1, 6, 6]"],
    ),
    (
        "negative_dim",
        lambda: infer_request(_x(), shape=[-2, 1, 6, 6]),
        INVALID,
        ["negative", "[-2, 1, 6, 6]"],
    ),
    (
        "raw_size",
        lambda: infer_request(_x(), raw=_x().tobytes()[:-4]),
        INVALID,
        ["284 raw bytes", "needs 288"],
    ),
    (
        "raw_size_shape",
        lambda: infer_request(_x(), shape=[3, 1, 6, 6]),
        INVALID,
        ["288 raw bytes", "needs 432"],
    ),
    ("typed_count", _typed_count, INVALID, ["73 FP32 values", "needs 72"]),
    ("uint8_range", _uint8_range, INVALID, ["0..255"]),
    ("two_inputs", _two_inputs, INVALID, ["exactly one input", f"'{INPUT_NAME}'"]),
    ("two_raw", _two_raw, INVALID, ["raw_input_contents", "got 2"]),
    ("no_input", lambda: infer_request(), INVALID, ["exactly one input", f"'{INPUT_NAME}'"]),
    (
        "input_name",
        lambda: infer_request(_x(), name="images"),
        INVALID,
        ["'images'", f"input is '{INPUT_NAME}'"],
    ),
    (
        "unknown_model",
        lambda: infer_request(_x(), model="resnet"),
        grpc.StatusCode.NOT_FOUND,
        ["'resnet'", f"'{MODEL}'"],
    ),
    (
        "unknown_output",
        lambda: infer_request(_x(), outputs=["prediction", "confidence"]),
        INVALID,
        ["'confidence'", "available", "hull_distance"],
    ),
]


@pytest.mark.parametrize(
    "make,code,words", [c[1:] for c in BAD_INFER], ids=[c[0] for c in BAD_INFER]
)
def test_bad_infer_request(server, make, code, words):
    details = run(
        _with_stubs(server.target, lambda s: expect_error(s.oip.ModelInfer(make()), code))
    )
    for w in words:
        assert w in details, (w, details)


def _tensor(
    x: np.ndarray, datatype: str = "FP32", shape: list[int] | None = None
) -> gpb.ClassifyRequest:
    return gpb.ClassifyRequest(
        images=gpb.Tensor(
            datatype=datatype, shape=list(x.shape) if shape is None else shape, raw=x.tobytes()
        )
    )


BAD_CLASSIFY = [
    ("shape", lambda: _tensor(_x(), shape=[2, 6, 6]), ["shape [2, 6, 6]", "[-1, 1, 6, 6]"]),
    ("datatype", lambda: _tensor(_x().astype(np.float64), "FP64"), ["'FP64'", "FP32"]),
    ("nan", lambda: _tensor(_nan()), ["NaN"]),
    ("empty", lambda: gpb.ClassifyRequest(), ["datatype ''"]),
    (
        "fp32_count",
        lambda: gpb.ClassifyRequest(
            images=gpb.Tensor(datatype="FP32", shape=[1, 1, 6, 6], fp32=[0.5] * 35)
        ),
        ["35 FP32 values", "needs 36"],
    ),
]


@pytest.mark.parametrize(
    "make,words", [c[1:] for c in BAD_CLASSIFY], ids=[c[0] for c in BAD_CLASSIFY]
)
def test_bad_classify_request(server, make, words):
    details = run(
        _with_stubs(server.target, lambda s: expect_error(s.guard.Classify(make()), INVALID))
    )
    for w in words:
        assert w in details, (w, details)


def test_classify_typed_fp32(server, guard):
    x = _x(1)
    req = gpb.ClassifyRequest(
        images=gpb.Tensor(datatype="FP32", shape=[1, 1, 6, 6], fp32=x.ravel().tolist())
    )
    resp = run(_with_stubs(server.target, lambda s: s.guard.Classify(req)))
    assert resp.results[0].prediction == expected(guard, x)["prediction"][0]


def test_bad_requests_do_not_break_the_batch_they_share(server, guard):
    """Bad and good requests at the same time: the good ones get their exact answers."""
    good = [images(2, seed=s) for s in range(6)]

    async def go(s: Stubs):
        calls = []
        for x in good:
            calls.append(s.oip.ModelInfer(infer_request(x)))
            calls.append(expect_error(s.oip.ModelInfer(infer_request(_nan())), INVALID))
            calls.append(
                expect_error(
                    s.oip.ModelInfer(infer_request(_x(), model="m")), grpc.StatusCode.NOT_FOUND
                )
            )
        return await asyncio.gather(*calls)

    out = run(_with_stubs(server.target, go))
    for i, x in enumerate(good):
        assert_outputs_match(decode(out[3 * i]), expected(guard, x))


def test_still_serving_after_bad_requests(server, guard):
    x = images(5, seed=123)

    async def go(s: Stubs):
        for make, code, _ in [c[1:] for c in BAD_INFER]:
            await expect_error(s.oip.ModelInfer(make()), code)
        ready = await s.oip.ServerReady(pb.ServerReadyRequest())
        return ready, await s.oip.ModelInfer(infer_request(x))

    ready, resp = run(_with_stubs(server.target, go))
    assert ready.ready
    assert_outputs_match(decode(resp), expected(guard, x))


# ------------------------------------------------------------------ limits
def test_oversized_message_is_resource_exhausted(make_server, guard):
    st = make_server(max_message_bytes=4096)
    big = images(40, seed=4)  # 40 * 36 * 4 = 5760 bytes of input alone
    small = images(2, seed=5)

    async def go(s: Stubs):
        details = await expect_error(
            s.oip.ModelInfer(infer_request(big)), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        await expect_error(
            s.guard.Classify(classify_request(big)), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        return details, await s.oip.ModelInfer(infer_request(small))

    details, resp = run(_with_stubs(st.target, go))
    assert "4096" in details or "larger than max" in details, details
    assert_outputs_match(decode(resp), expected(guard, small))


def test_queue_full_is_resource_exhausted(make_server, guard):
    st = make_server(slow_s=0.3, max_queue_size=1, max_queue_delay_ms=0.0)
    xs = [images(1 + i % 2, seed=200 + i) for i in range(12)]

    async def one(s: Stubs, x: np.ndarray):
        try:
            return decode(await s.oip.ModelInfer(infer_request(x)))
        except grpc.aio.AioRpcError as exc:
            return exc

    async def go(s: Stubs):
        return await asyncio.gather(*(one(s, x) for x in xs))

    out = run(_with_stubs(st.target, go))
    refused = [o for o in out if isinstance(o, grpc.aio.AioRpcError)]
    assert refused, "no request was refused"
    for exc in refused:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
        assert "overloaded" in exc.details() and "retry" in exc.details()
    served = [(x, o) for x, o in zip(xs, out) if not isinstance(o, grpc.aio.AioRpcError)]
    assert served, "every request was refused"
    for x, got in served:
        assert_outputs_match(got, expected(guard, x))
    reg = st.srv.metrics.registry
    assert reg.get_sample_value(
        "guard_requests_total", {"rpc": "ModelInfer", "outcome": "resource_exhausted"}
    ) == len(refused)
    assert reg.get_sample_value(
        "guard_requests_total", {"rpc": "ModelInfer", "outcome": "ok"}
    ) == len(served)
    # the server recovers once the queue drains
    x = images(3, seed=1)
    got = run(_with_stubs(st.target, lambda s: s.oip.ModelInfer(infer_request(x))))
    assert_outputs_match(decode(got), expected(guard, x))
