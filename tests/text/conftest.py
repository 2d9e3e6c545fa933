"""Fixtures for the text tests: the fortunes corpus and tokenizers trained with HF tokenizers."""
from __future__ import annotations

import pytest

from tests.text import corpus

KINDS = ("wordpiece", "bpe", "unigram")


def pytest_collection_modifyitems(config, items):
    if corpus.available():
        return
    skip = pytest.mark.skip(reason="the fortunes corpora are not installed "
                                   "(apt-get install fortunes fortunes-de fortunes-es "
                                   "fortunes-it fortunes-ru fortunes-zh)")
    for item in items:
        if "tests/text" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def trained_json():
    pytest.importorskip("tokenizers")
    from tests.text import trained

    def get(kind: str) -> str:
        return trained.trained(kind)
    return get
