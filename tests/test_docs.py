"""The README's and docs' generated tables are what their committed JSON gives (no hand-copied numbers),
and every link between the pages points at a file that exists."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_generated_table_equals_its_json():
    result = subprocess.run([sys.executable, ROOT / "scripts" / "doc_tables.py", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!-- table: ") >= 1 and "| original |" in readme  # the marker is filled, not empty


def test_a_stale_table_is_caught(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import doc_tables
    finally:
        sys.path.pop(0)
    text = "<!-- table: bench/spm-object.json -->\n| a hand-edited row |\n<!-- /table -->\n"
    fixed, changed = doc_tables.regenerated(text)
    assert changed == ["bench/spm-object.json"] and "| `spm iterations=200" in fixed
    assert doc_tables.regenerated(fixed)[1] == []


def test_links_between_the_pages_resolve():
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).resolve().is_file(), f"{page.relative_to(ROOT)} links to missing {target}"
