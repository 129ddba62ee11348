"""test_rollout.py, whole, on the one-process shape (`front-door`): canary and linear rollouts
decided by the live evidence the front door reports, rollbacks by error rate, latency and
disagreement, abort and promote, a killed deploy finished by the next run."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_rollout import *  # noqa: E402,F401,F403 (every test, in its order, on the stack below)
from test_rollout import rollout_stack  # noqa: E402


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from rollout_stack(tmp_path_factory, shape="one-process")
