"""Unit tests run tiny models: one thread each (more gain nothing, and on shared cores they make
every operation wait), restored for the rest of the session afterwards."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
