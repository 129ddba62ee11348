"""TLS on the gRPC hops, on the whole stack (scripts/stack.py, real processes, port 0) with
certificates from a throwaway CA (scripts/dev-ca) and mutual TLS required by every gRPC server:
predictions go through gateway -> predictor -> watcher and gateway -> logger over mutual TLS
and are recorded; a gRPC client with no certificate, or speaking plaintext, is refused, and one
presenting a certificate the CA signed is served (the official Python gRPC client)."""
import json
import subprocess
import time

import grpc
import pytest

from conftest import ROOT, predictor_stub, running_stack
from test_stack_e2e import EXPECTED, feature_store, http, row, wait_for_records


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run([str(ROOT / "scripts" / "dev-ca"), str(folder)], check=True, capture_output=True)
    return folder


@pytest.fixture(scope="module")
def stack(tmp_path_factory, certs):
    yield from running_stack(tmp_path_factory, "tls", tls_dir=str(certs), mutual_tls=True)


def test_predictions_cross_every_hop_over_mutual_tls_and_are_recorded(stack):
    # The predictor names the package once its follower has heard from the watcher (over
    # TLS too): until then answers carry no version.
    deadline = time.time() + 15
    while True:
        status, _, raw = http("POST", stack.url + "/v1/predict", {"instances": [row(0)]})
        assert status == 200, raw
        body = json.loads(raw)
        if body["model"]["model_package_version"] == 1 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert body["predictions"][0]["probability"] == pytest.approx(EXPECTED[0], abs=1e-6)
    assert body["model"]["model_package_version"] == 1, body  # the watcher answered, over TLS
    interaction_id = body["predictions"][0]["interaction_id"]
    wait_for_records(feature_store(stack), {interaction_id: body["predictions"][0]["probability"]})


def call_predictor(stack, credentials):
    target = stack.predictor.addrs["grpc"]
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        request_class, call = predictor_stub(channel)
        request = request_class(request_id="tls-test")
        request.rows.add().values.extend([float("nan") if v is None else v for v in row(2)])
        return call(request, timeout=5)


def test_a_client_without_a_certificate_or_in_plaintext_is_refused(stack, certs):
    ca = (certs / "ca.crt").read_bytes()
    for credentials in (grpc.ssl_channel_credentials(root_certificates=ca), None):
        with pytest.raises(grpc.RpcError) as refused:
            call_predictor(stack, credentials)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value


def test_a_client_with_a_certificate_the_ca_signed_is_served(stack, certs):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.crt").read_bytes(),
        private_key=(certs / "gateway.key").read_bytes(),
        certificate_chain=(certs / "gateway.crt").read_bytes())
    answer = call_predictor(stack, credentials)
    assert answer.predictions[0].scores[0] == pytest.approx(EXPECTED[2], abs=1e-6)


def creds_of(certs, service):
    return grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.crt").read_bytes(),
        private_key=(certs / f"{service}.key").read_bytes(),
        certificate_chain=(certs / f"{service}.crt").read_bytes())


def report_shadow(stack, credentials):
    """ReportShadow with a made-up candidate, built from the watcher's reflection."""
    from google.protobuf import message_factory
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    with grpc.secure_channel(stack.watcher.addrs["grpc"], credentials) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        cls = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))  # noqa: E731
        call = channel.unary_unary("/mlops.registry.v1.RegistryWatcher/ReportShadow",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=cls("mlops.registry.v1.ReportShadowResponse").FromString)
        request = cls("mlops.registry.v1.ReportShadowRequest")(candidate_package_arn="arn:forged")
        request.outcomes.add(live=[0.1], candidate=[0.9], live_latency_ms=1.0)
        return call(request, timeout=5)


def test_each_method_admits_only_its_callers_identities(stack, certs):
    """With mutual TLS a certificate the CA signed is not enough: the internet-facing
    gateway's may not feed the shadow comparison (only a predictor's may), nor may the
    watcher's call the predictor."""
    with pytest.raises(grpc.RpcError) as refused:
        report_shadow(stack, creds_of(certs, "gateway"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
    assert "gateway may not call" in refused.value.details()
    # The predictor's certificate reaches the method itself (which refuses a made-up candidate).
    with pytest.raises(grpc.RpcError) as reached:
        report_shadow(stack, creds_of(certs, "predictor"))
    assert reached.value.code() == grpc.StatusCode.FAILED_PRECONDITION, reached.value
    with pytest.raises(grpc.RpcError) as other:
        call_predictor(stack, creds_of(certs, "registry-watcher"))
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED, other.value
