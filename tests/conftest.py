"""Shared test settings: small thread count so parallel workers don't oversubscribe 2 cores."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
