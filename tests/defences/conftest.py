"""Defence tests train tiny models: one torch thread is faster on a shared, busy machine."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield
