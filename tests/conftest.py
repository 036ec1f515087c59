import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def synth():
    from snacs.data import synthetic

    return synthetic("train", n_per_class=30, seed=0)


@pytest.fixture(scope="session")
def synth_test():
    from snacs.data import synthetic

    return synthetic("test", n_per_class=10, seed=0)


@pytest.fixture(autouse=True)
def _seed_torch():
    """torch 2.13 draws a random default seed per process: pin it so model inits repeat."""
    torch.manual_seed(0)
