"""test_shadow.py on the one-process shape (`front-door`): a shadowed candidate's answers
recorded through the in-process logger, its comparison what xgboost says, approving and
rejecting it, the pipeline's gate showing the comparison, a candidate that cannot load. (The
slow or failing candidate's test builds stacks of its own, in the microservices shape.)"""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_shadow import *  # noqa: E402,F401,F403 (every test, in its order, on the stack below)
from test_shadow import shadow_stack  # noqa: E402

del test_a_slow_or_failing_candidate_leaves_live_answers_alone  # noqa: F821 (its own stacks)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from shadow_stack(tmp_path_factory, shape="one-process")
