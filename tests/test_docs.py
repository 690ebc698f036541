"""The generated documents match what they are generated from; the README stays a user's page."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["docs/generate_patches.py", "benchmarks/report.py"])
def test_generated_documents_are_up_to_date(script):
    proc = subprocess.run([sys.executable, ROOT / script, "--check"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr


def test_readme_is_short_and_links_existing_documents():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for link in ("docs/patches.md", "docs/benchmarks.md", "docs/design.md"):
        assert link in text and (ROOT / link).is_file()
