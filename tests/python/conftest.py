"""Starts the real sagemaker-local binary on 127.0.0.1:0 for the Python suites.

The binary comes from $SAGEMAKER_LOCAL_BIN, else $CARGO_TARGET_DIR/debug (the README's test
command builds it first). A missing binary or a server that does not come up fails loudly.
"""
import contextlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import boto3
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
from stack import Service, Stack  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
ACCESS_KEY = "sagemaker-local"
SECRET_KEY = "sagemaker-local-secret"
REGION = "us-east-1"


def binary():
    explicit = os.environ.get("SAGEMAKER_LOCAL_BIN")
    if explicit:
        return pathlib.Path(explicit)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "sagemaker-local"


class Server:
    """sagemaker-local alone on port 0 (fast endpoint transitions and offline flushes), started
    as every process here is (`stack.Service`)."""

    def __init__(self, data_dir, extra_args=()):
        exe = binary()
        if not exe.exists():
            raise RuntimeError(f"sagemaker-local binary not found at {exe}: run `cargo build -p sagemaker-local` first")
        self.data_dir = pathlib.Path(data_dir)
        self.service = Service("sagemaker-local", [
            str(exe), "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir),
            "--endpoint-delay-ms", "100", "--offline-flush-ms", "200", *extra_args], dict(os.environ),
            subprocess.DEVNULL)
        self.proc = self.service.proc
        self.url = "http://" + self.service.addrs["http"]

    def client(self, service, secret=SECRET_KEY, key=ACCESS_KEY):
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=key, aws_secret_access_key=secret)

    def put_object(self, bucket, key, data):
        path = self.data_dir / "s3" / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"s3://{bucket}/{key}"

    def stop(self):
        return self.service.stop(timeout=20)


@pytest.fixture(scope="module")
def server():
    data_dir = tempfile.mkdtemp(prefix="sagemaker-local-")
    srv = Server(data_dir)
    yield srv
    code = srv.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
    assert code == 0, f"sagemaker-local exited with {code} on SIGTERM"


@pytest.fixture(scope="module")
def sm(server):
    return server.client("sagemaker")


@pytest.fixture(scope="module")
def runtime(server):
    return server.client("sagemaker-runtime")


@pytest.fixture(scope="module")
def featurestore(server):
    return server.client("sagemaker-featurestore-runtime")


def running_stack(tmp_path_factory, name, **kwargs):
    """A module's whole stack (scripts/stack.py) on port 0, its logs in its data dir; every
    process must exit 0 on SIGTERM at the end. Use it as the body of a module fixture, or
    inside a test as `with stack_running(...) as s:`. A test that fails meanwhile still stops
    every process (the stop is in a finally)."""
    data = tmp_path_factory.mktemp(name)
    with open(data / "stack.log", "w") as log:
        s = Stack(str(binary().parent), str(data), log=log, **kwargs)
        try:
            yield s
        finally:
            codes = s.stop()
    assert all(c == 0 for c in codes.values()), f"exit codes after SIGTERM: {codes}"


# The same stack for the length of a `with` block inside one test.
stack_running = contextlib.contextmanager(running_stack)


def predictor_stub(channel):
    """The predictor's Predict call and its request class, built from the server's own
    reflection (no generated code): `(request_class, call)`."""
    from google.protobuf import message_factory
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    request_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("mlops.predictor.v1.PredictRequest"))
    response_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("mlops.predictor.v1.PredictResponse"))
    call = channel.unary_unary("/mlops.predictor.v1.Predictor/Predict",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response_class.FromString)
    return request_class, call
