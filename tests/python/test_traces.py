"""OpenTelemetry traces through every hop, received by a real OTLP receiver (the
`opentelemetry-proto` messages over grpcio, and over HTTP): for one request that arrives with a
W3C `traceparent`, the gateway, the predictor and the logger export spans in that trace with the
right parents; the InvokeEndpoint span names the variant; the span that ships the interaction
to the Feature Store is linked to the trace; the answer returns `traceparent` and the log lines
carry the trace id. With no endpoint set, nothing is traced: no `traceparent`, no `trace_id`."""
import json
import pathlib
import secrets
import sys
import threading
import time
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from conftest import running_stack, stack_running  # noqa: E402
from test_stack_e2e import row  # noqa: E402

import tritonclient.grpc as triton_grpc  # noqa: E402


class Spans:
    """What a receiver got: every span, with its service's name, by span id."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans = []
        self.exports = 0

    def add(self, request):
        with self.lock:
            self.exports += 1
            for rs in request.resource_spans:
                service = next((a.value.string_value for a in rs.resource.attributes
                                if a.key == "service.name"), "")
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append((service, s))

    def of_trace(self, trace_id):
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s.trace_id == trace_id]

    def linked_to(self, trace_id):
        with self.lock:
            return [(svc, s) for svc, s in self.spans if any(l.trace_id == trace_id for l in s.links)]

    def wait(self, until, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = until()
            if got:
                return got
            time.sleep(0.1)
        return until()


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = Spans()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 (the service's method name)
        self.spans.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class HttpReceiver:
    """OTLP/HTTP with protobuf bodies: POST /v1/traces."""

    def __init__(self):
        self.spans = spans = Spans()
        self.paths = paths = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                paths.append(self.path)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                spans.add(request)
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def traced_env(endpoint, protocol, **more):
    return dict(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
                OTEL_BSP_SCHEDULE_DELAY="100", **more)


@pytest.fixture(scope="module")
def receiver():
    r = GrpcReceiver()
    yield r
    r.server.stop(0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, receiver):
    yield from running_stack(tmp_path_factory, "traces", poll_ms=200,
                             extra_env=traced_env(f"http://127.0.0.1:{receiver.port}", "grpc",
                                                  # a log line per request (tower-http's), to check
                                                  RUST_LOG="info,tower_http=debug"))


def predict(url, headers=None, rows=(0,)):
    body = json.dumps({"instances": [row(i) for i in rows]}).encode()
    req = urllib.request.Request(url + "/v1/predict", data=body, method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), json.loads(r.read())


def attrs(span):
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value or v.int_value or v.double_value or v.bool_value
    return out


def named(spans, service, name):
    found = [s for svc, s in spans if svc == service and s.name == name]
    assert found, f"no {name!r} span from {service}: {[(svc, s.name) for svc, s in spans]}"
    return found[0]


def test_one_request_is_one_trace_across_every_hop(stack, receiver):
    trace_id, caller_span = secrets.token_bytes(16), secrets.token_bytes(8)
    traceparent = f"00-{trace_id.hex()}-{caller_span.hex()}-01"
    status, headers, answer = predict(stack.url, {"traceparent": traceparent})
    assert status == 200, answer
    # the answer names the trace it continued
    returned = headers.get("traceparent", "")
    assert returned.startswith(f"00-{trace_id.hex()}-") and returned.endswith("-01"), headers

    spans = receiver.spans
    want = [("gateway", "POST /v1/predict"), ("gateway", "validate"), ("gateway", "Predict"),
            ("gateway", "Log"), ("predictor", "mlops.predictor.v1.Predictor/Predict"),
            ("predictor", "InvokeEndpoint"),
            ("interaction-logger", "mlops.interaction.v1.InteractionLogger/Log"),
            ("interaction-logger", "spool commit")]
    got = spans.wait(lambda: (lambda t: t if all(any(svc == w[0] and s.name == w[1] for svc, s in t)
                                                 for w in want) else None)(spans.of_trace(trace_id)))
    assert got, f"missing spans: {[(svc, s.name) for svc, s in spans.of_trace(trace_id)]}"

    request = named(got, "gateway", "POST /v1/predict")
    assert request.parent_span_id == caller_span, "the gateway continues the caller's span"
    by_id = {s.span_id: (svc, s) for svc, s in got}
    for service, name in want:
        s = named(got, service, name)
        if s is request:
            continue
        # every span's ancestry reaches the gateway's request span, within the trace
        cur, hops = s, 0
        while cur.span_id != request.span_id:
            assert cur.parent_span_id in by_id, f"{service}/{name}: a parent outside the trace"
            cur, hops = by_id[cur.parent_span_id][1], hops + 1
            assert hops < 10
    gw_predict = named(got, "gateway", "Predict")
    assert named(got, "predictor", "mlops.predictor.v1.Predictor/Predict").parent_span_id == gw_predict.span_id
    assert named(got, "interaction-logger", "mlops.interaction.v1.InteractionLogger/Log").parent_span_id \
        == named(got, "gateway", "Log").span_id
    invoke = attrs(named(got, "predictor", "InvokeEndpoint"))
    assert invoke["sagemaker.variant"] == answer["model"]["variant_name"], invoke
    assert invoke["sagemaker.endpoint"] == "my-mlops-prod-endpoint" and invoke["rows"] == 1, invoke

    # the shipping span has a trace of its own, linked to the request's
    shipped = spans.wait(lambda: spans.linked_to(trace_id))
    assert shipped and {svc for svc, _ in shipped} == {"interaction-logger"}, shipped
    assert {s.name for _, s in shipped} <= {"BatchWriteRecord", "PutRecord"}, shipped

    # the gateway's log lines of the request carry its trace id
    time.sleep(0.5)
    stack.log.flush()
    lines = [json.loads(l.split("] ", 1)[1]) for l in open(stack.data_dir + "/stack.log")
             if l.startswith("[gateway] {") and '"processing request"' not in l and "processing request" in l]
    mine = [l for l in lines if l.get("span", {}).get("trace_id") == trace_id.hex()]
    assert len(mine) == 2, lines  # started, finished
    assert all("trace_id" in l.get("span", {}) for l in lines), "every request's lines name their trace"


def test_the_oip_grpc_api_continues_the_trace_too(stack, receiver):
    trace_id = secrets.token_bytes(16)
    client = triton_grpc.InferenceServerClient(stack.gateway.addrs["grpc"])
    import numpy as np
    x = np.array([[np.nan if v is None else v for v in row(0)]], dtype=np.float32)
    inp = triton_grpc.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    client.infer("my-mlops-prod-endpoint", [inp],
                 headers={"traceparent": f"00-{trace_id.hex()}-{secrets.token_bytes(8).hex()}-01"})
    spans = receiver.spans
    want = {"InvokeEndpoint", "spool commit", "inference.GRPCInferenceService/ModelInfer"}
    got = spans.wait(lambda: (lambda t: t if want <= {s.name for _, s in t} else None)(spans.of_trace(trace_id)))
    assert got, spans.of_trace(trace_id)
    assert named(got, "gateway", "inference.GRPCInferenceService/ModelInfer")


def test_a_request_without_traceparent_starts_a_trace(stack, receiver):
    _, headers, _ = predict(stack.url)
    trace_id = bytes.fromhex(headers["traceparent"].split("-")[1])
    spans = receiver.spans
    got = spans.wait(lambda: (lambda t: t if {"InvokeEndpoint", "POST /v1/predict"} <= {s.name for _, s in t}
                              else None)(spans.of_trace(trace_id)))
    assert got and named(got, "gateway", "POST /v1/predict").parent_span_id == b""


def test_http_protobuf_export_and_the_sampler(tmp_path_factory):
    """OTLP over HTTP (the specification's default protocol, /v1/traces appended to the
    endpoint), whatever RUST_LOG says of the log lines; and OTEL_TRACES_SAMPLER=always_off
    exports nothing while still propagating."""
    r = HttpReceiver()
    try:
        # RUST_LOG=warn, as production often runs: it quiets the logs, not the traces.
        with stack_running(tmp_path_factory, "traces-http", poll_ms=200,
                               extra_env=traced_env(f"http://127.0.0.1:{r.port}", "http/protobuf",
                                                    OTEL_SERVICE_NAME="front", RUST_LOG="warn")) as s:
            _, headers, _ = predict(s.url)
            trace_id = bytes.fromhex(headers["traceparent"].split("-")[1])
            got = r.spans.wait(lambda: [x for x in r.spans.of_trace(trace_id) if x[1].name == "InvokeEndpoint"])
            assert got and got[0][0] == "front", "OTEL_SERVICE_NAME names the service"
            hops = {"validate", "Predict", "Log", "spool commit"}
            names = lambda: {x[1].name for x in r.spans.of_trace(trace_id)}  # noqa: E731
            r.spans.wait(lambda: hops <= names())
            assert hops <= names(), names()
            assert set(r.paths) == {"/v1/traces"}, r.paths
    finally:
        r.server.shutdown()
    r = HttpReceiver()
    try:
        with stack_running(tmp_path_factory, "traces-off", poll_ms=200,
                               extra_env=traced_env(f"http://127.0.0.1:{r.port}", "http/protobuf",
                                                    OTEL_TRACES_SAMPLER="always_off")) as s:
            _, headers, _ = predict(s.url)
            assert headers["traceparent"].endswith("-00"), "propagated, not sampled"
            time.sleep(1.5)
            assert r.spans.spans == [], "always_off exports nothing"
    finally:
        r.server.shutdown()


REQUEST_PATH = {"POST /v1/predict", "validate", "Predict", "Log", "mlops.predictor.v1.Predictor/Predict",
                "InvokeEndpoint", "mlops.interaction.v1.InteractionLogger/Log", "spool commit"}


def test_a_ratio_sampler_decides_once_for_every_hop(tmp_path_factory):
    """At a ratio, the gateway decides for each request before building anything: a sampled
    request is one whole trace across the hops; an unsampled one is propagated with the sampled
    flag off and exports nothing anywhere, not even the Log call that carries its interaction
    later (no orphan trace of its own)."""
    r = GrpcReceiver()
    try:
        with stack_running(tmp_path_factory, "traces-ratio", poll_ms=200,
                           extra_env=traced_env(f"http://127.0.0.1:{r.port}", "grpc",
                                                OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                                                OTEL_TRACES_SAMPLER_ARG="0.5")) as s:
            answers = [predict(s.url)[1]["traceparent"].split("-") for _ in range(40)]
            sampled = {bytes.fromhex(a[1]) for a in answers if a[3] == "01"}
            unsampled = {bytes.fromhex(a[1]) for a in answers if a[3] == "00"}
            assert sampled and unsampled and len(sampled | unsampled) == 40, answers
            whole = lambda t: {n for _, x in r.spans.of_trace(t) for n in [x.name]} >= REQUEST_PATH  # noqa: E731
            assert r.spans.wait(lambda: all(whole(t) for t in sampled)), "every sampled request is a whole trace"
            time.sleep(1.5)
            with r.spans.lock:
                stray = [(svc, x.name, x.trace_id.hex()) for svc, x in r.spans.spans
                         if x.name in REQUEST_PATH and x.trace_id not in sampled]
            assert stray == [], "spans of unsampled requests, or traces of their own"
    finally:
        r.server.stop(0)


def test_without_an_endpoint_nothing_is_traced(tmp_path_factory):
    with stack_running(tmp_path_factory, "traces-unset", poll_ms=200) as s:
        traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        _, headers, _ = predict(s.url, {"traceparent": traceparent})
        assert "traceparent" not in {k.lower() for k in headers}, headers
        time.sleep(0.3)
        s.log.flush()
        log = open(s.data_dir + "/stack.log").read()
        assert "trace_id" not in log and traceparent.split("-")[1] not in log
