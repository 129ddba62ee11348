"""test_access.py, whole, on the one-process shape (`front-door`): the same keys, limits, CORS
and OIP errors as the microservices."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_access import *  # noqa: E402,F401,F403 (every test, in its order, on the stack below)
from test_access import access_stack  # noqa: E402


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keys_file):  # noqa: F811
    yield from access_stack(tmp_path_factory, keys_file, shape="one-process")
