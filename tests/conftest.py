"""Shared fixtures: few-shot datasets are featurized once per test session into a temporary cache."""
import os
import tempfile

import pytest

# Featurized caches of the test session go to a fresh folder, so tests never read a stale cache.
os.environ.setdefault("PINTUNING_CACHE_DIR", tempfile.mkdtemp(prefix="pintuning-test-cache-"))


@pytest.fixture(scope="session")
def tox21():
    from deepchem_pintuning.data import load_fewshot
    return load_fewshot("tox21")


@pytest.fixture(scope="session")
def cld():
    """ToxCast CLD group: 305 molecules x 19 properties, the smallest shipped benchmark."""
    from deepchem_pintuning.data import load_fewshot
    return load_fewshot("toxcast-CLD")
