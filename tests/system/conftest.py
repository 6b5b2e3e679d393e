import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    """Trainer sets torch's (process-wide) thread count: give the rest of the session its own back.

    The runs here use one thread: tiny models gain nothing from more, and on a busy two-core
    machine a second thread makes each step several times slower."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
