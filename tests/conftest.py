import pytest
from helpers import trained_pair

import scratio as sr

sr.settings.verbosity = 0


@pytest.fixture(scope="session")
def trained_2d():
    return trained_pair(2000, 2, n_steps=600)


@pytest.fixture(scope="session")
def trained_10d():
    return trained_pair(3000, 10, n_steps=800)
