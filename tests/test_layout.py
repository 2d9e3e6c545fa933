"""The test tree itself: pytest's default import mode needs unique test file names."""
from collections import Counter
from pathlib import Path


def test_test_file_names_are_unique():
    # Folders without __init__.py import their test files by basename: two test_cli.py
    # make the whole run stop at collection ("import file mismatch").
    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py")
                    if not (p.parent / "__init__.py").exists())
    assert [n for n, c in names.items() if c > 1] == [], "rename the duplicates"
