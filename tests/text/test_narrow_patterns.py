"""The pre-tokenizer regexes with their char classes cut to the BMP (used on text without
astral chars, for speed) match exactly as the full ones on every BMP char."""
from __future__ import annotations

import pytest

from edgepack.runtime.text import pretokenizers as P
from edgepack.runtime.text import unicode as uc

_BUILDERS = (P._byte_level_pattern, P._bert_pattern, P._whitespace_pattern)


def _bmp_text(step: int, offset: int) -> str:
    """Every BMP char (no surrogates), in runs of `step` with a probe char between runs."""
    chars = [chr(c) for c in range(1, 0x10000) if not 0xD800 <= c <= 0xDFFF]
    probes = " a1.'\u00e9\u4e2d"
    return "".join(c + (probes[(i + offset) % len(probes)] if i % step == 0 else "")
                   for i, c in enumerate(chars))


@pytest.mark.parametrize("build", _BUILDERS, ids=lambda b: b.__name__)
def test_bmp_cut_matches_like_the_full_pattern(build):
    full, bmp = build(), build(uc.BMP)
    assert bmp.pattern != full.pattern  # the cut really dropped the astral ranges
    for step, offset in ((1, 0), (3, 2), (7, 5)):
        text = _bmp_text(step, offset)
        assert uc.narrow(text)
        assert bmp.findall(text) == full.findall(text)


def test_narrow_sees_astral_chars():
    assert uc.narrow("") and uc.narrow("plain ascii") and uc.narrow("中文 ß \uffff")
    assert not uc.narrow("emoji \U0001F600") and not uc.narrow("\U00020000")


def test_narrow_is_false_exactly_when_a_char_is_above_the_bmp():
    for c in ("\U00010000", "\U0001F600", "\U0010FFFF", "\U00020000"):
        for text in (c, "ab" + c, c + "\u0436", "\u4e2d\u6587" + c + "x"):
            assert uc.narrow(text) is False
    for text in ("", "abc", "\u00e9", "\u0436\u043e", "\uffff", "\ud7ff\ue000", "\u4e2d" * 50):
        assert uc.narrow(text) is True
