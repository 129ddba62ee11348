"""sagemaker-local stays in its data directory and in its budget, with boto3 unchanged: model
artifacts and the offline store resolve only under its S3 folder (or the file roots it is
given), artifacts are read within a size and a decompression cap, a model whose tree loops is
a failed endpoint (not a hung server), a failed endpoint is refused an update as SageMaker
refuses it, and SigV4 requires the host and date signed, an exact scope and a signature that
is checked before a large body is read."""
import io
import json
import pathlib
import socket
import tarfile
import time

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY, Server
from deploy import XGBOOST_IMAGE, model_tar_gz

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO_MODEL = json.loads((ROOT / "demo" / "model" / "xgboost-model.json").read_text())


def endpoint_for(sm, name, url):
    """An endpoint of a model (not from a package) at `url`; returns its description once it
    has settled."""
    sm.create_model(ModelName=name, PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": url})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    deadline = time.time() + 20
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] not in ("Creating", "Updating"):
            return d
        time.sleep(0.1)
    raise AssertionError(f"{name} never settled")


@pytest.mark.parametrize("url,why", [
    ("s3://escape//etc/passwd", "empty, '.' or '..' segments"),
    ("s3://escape/a/../../../etc/passwd", "empty, '.' or '..' segments"),
    ("s3://../etc/passwd", "is not a valid bucket name"),
    ("file:///etc/passwd", "read only under the folders"),
])
def test_artifacts_outside_the_data_dir_are_refused(sm, url, why):
    name = "escape-" + str(abs(hash(url)))[:10]
    d = endpoint_for(sm, name, url)
    assert d["EndpointStatus"] == "Failed" and why in d["FailureReason"], d


def test_an_offline_store_outside_the_data_dir_is_refused(sm):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_feature_group(
            FeatureGroupName="escape-offline", RecordIdentifierFeatureName="id", EventTimeFeatureName="t",
            FeatureDefinitions=[{"FeatureName": "id", "FeatureType": "String"}, {"FeatureName": "t", "FeatureType": "String"}],
            OfflineStoreConfig={"S3StorageConfig": {"S3Uri": "s3://bucket//tmp/elsewhere"}})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "S3Uri" in e.value.response["Error"]["Message"]


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A sagemaker-local with small caps (8 MiB decompressed, 1 MiB stored): a bomb is cheap."""
    srv = Server(tmp_path_factory.mktemp("capped"), extra_args=["--max-model-mb", "8", "--max-artifact-mb", "1"])
    yield srv
    assert srv.stop() == 0


def test_a_decompression_bomb_or_an_oversized_artifact_fails_its_endpoint_and_the_server_lives(capped):
    sm = capped.client("sagemaker")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("padding")
        info.size = 16 << 20  # twice what this server decompresses, a few KB stored
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    url = capped.put_object("bombs", "bomb/model.tar.gz", buf.getvalue())
    d = endpoint_for(sm, "bomb", url)
    assert d["EndpointStatus"] == "Failed" and "decompresses to more than" in d["FailureReason"], d
    big = capped.put_object("bombs", "big/model.json", b" " * (2 << 20))
    d = endpoint_for(sm, "oversized", big)
    assert d["EndpointStatus"] == "Failed" and "the most sagemaker-local loads" in d["FailureReason"], d
    assert sm.describe_endpoint(EndpointName="bomb")["EndpointStatus"] == "Failed", "the server still answers"


def test_a_model_whose_tree_loops_fails_its_endpoint_instead_of_hanging(server, sm):
    model = json.loads(json.dumps(DEMO_MODEL))
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["left_children"][1] = 0  # node 1 points back at the root
    url = server.put_object("cyclic", "m/model.tar.gz", model_tar_gz(json.dumps(model).encode()))
    d = endpoint_for(sm, "cyclic-tree", url)
    assert d["EndpointStatus"] == "Failed", d
    assert "not a tree" in d["FailureReason"] or "bad children" in d["FailureReason"], d


def test_a_failed_endpoint_is_refused_an_update_as_sagemaker_refuses_it(server, sm):
    d = endpoint_for(sm, "failed-one", "s3://nothing-here/missing/model.tar.gz")
    assert d["EndpointStatus"] == "Failed", d
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_endpoint(EndpointName="failed-one", EndpointConfigName="failed-one")
    err = e.value.response["Error"]
    assert err["Code"] == "ValidationException" and "Cannot update failed endpoint" in err["Message"], err
    sm.delete_endpoint(EndpointName="failed-one")  # the way out


def signed(server, headers_to_drop=(), scope_date=None, body=b"{}", secret=SECRET_KEY, key=ACCESS_KEY):
    """A DescribeEndpoint request signed by botocore, then tampered with."""
    host = server.url.split("//")[1]
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=server.url + "/", data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.DescribeEndpoint"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(key, secret), "sagemaker", REGION).add_auth(request)
    auth = request.headers["Authorization"]
    for header in headers_to_drop:
        signed_headers = auth.split("SignedHeaders=")[1].split(",")[0]
        kept = ";".join(h for h in signed_headers.split(";") if h != header)
        auth = auth.replace(f"SignedHeaders={signed_headers}", f"SignedHeaders={kept}")
    if scope_date is not None:
        credential = auth.split("Credential=")[1].split(",")[0]
        parts = credential.split("/")
        parts[1] = scope_date
        auth = auth.replace(credential, "/".join(parts))
    headers = dict(request.headers, Authorization=auth, Host=host)
    return headers


def raw(server, headers, body=b"", wait=5.0):
    host, port = server.url.split("//")[1].split(":")
    lines = [f"POST / HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()] + ["Connection: close", "", ""]
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall("\r\n".join(lines).encode() + body)
        started = time.time()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer.decode(errors="replace"), time.time() - started


@pytest.mark.parametrize("tamper,why", [
    (dict(headers_to_drop=["host"]), "'host' must be a signed header"),
    (dict(headers_to_drop=["x-amz-date"]), "'x-amz-date' must be a signed header"),
    (dict(scope_date=""), "scoped to a valid date"),
    (dict(scope_date="20200101"), "scoped to a valid date"),
])
def test_sigv4_requires_the_host_and_date_signed_and_an_exact_scope(server, tamper, why):
    headers = signed(server, **tamper)
    answer, _ = raw(server, dict(headers, **{"Content-Length": "2"}), b"{}")
    assert answer.startswith("HTTP/1.1 403") and why in answer, answer


def test_a_bad_signature_is_refused_before_a_large_body_is_read(server):
    """The request says 6 MB are coming and sends none: an unsigned caller gets its 403 at
    once (the key, the scope and, with the payload hash declared, the signature itself are
    checked before the body is read), not after the server waited for 6 MB."""
    for headers in (dict(signed(server, key="not-the-key")),
                    dict(signed(server, secret="not-the-secret"), **{"X-Amz-Content-Sha256": "0" * 64})):
        headers["Content-Length"] = str(6_000_000)
        answer, waited = raw(server, headers, b"", wait=10)
        assert answer.startswith("HTTP/1.1 403"), answer
        assert waited < 3, waited
