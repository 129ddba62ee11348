"""test_pipeline.py, whole, on the one-process shape (`front-door`): Train registers a pending
package, the gate deploys it on approval, a registry approval deploys by itself and a
rejection rolls back, under live load through the one process."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_pipeline import *  # noqa: E402,F401,F403 (every test, in its order, on the stack below)
from test_pipeline import pipeline_stack  # noqa: E402


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from pipeline_stack(tmp_path_factory, shape="one-process")
