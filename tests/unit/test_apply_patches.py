"""third_party/apply_patches.py: our edits to the CRT sources apply strictly or not at all."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "third_party" / "apply_patches.py"
_spec = importlib.util.spec_from_file_location("apply_patches", SCRIPT)
assert _spec and _spec.loader
ap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ap)

ORIGINAL = "".join(f"line {n}\n" for n in range(1, 21))
PATCH = """A description: why this edit exists.

--- a/pkg/file.c
+++ b/pkg/file.c
@@ -3,3 +3,4 @@
 line 3
-line 4
+line four
+line four and a half
 line 5
@@ -15,3 +16,3 @@
 line 15
-line 16
+line sixteen
 line 17
"""


def _tree(tmp_path: Path, text: str = ORIGINAL) -> Path:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "file.c").write_text(text)
    (tmp_path / "edit.patch").write_text(PATCH)
    return tmp_path / "src"


def test_applies_every_hunk(tmp_path):
    src = _tree(tmp_path)
    assert ap.main([str(src), str(tmp_path / "edit.patch")]) == 0
    lines = (src / "pkg" / "file.c").read_text().splitlines()
    assert lines[2:6] == ["line 3", "line four", "line four and a half", "line 5"]
    assert lines[15:18] == ["line 15", "line sixteen", "line 17"]
    assert len(lines) == 21


def test_finds_a_hunk_that_moved_but_is_unique(tmp_path):
    src = _tree(tmp_path, "extra\nextra\n" + ORIGINAL)
    assert ap.main([str(src), str(tmp_path / "edit.patch")]) == 0
    assert "line sixteen" in (src / "pkg" / "file.c").read_text()


def test_a_hunk_that_does_not_match_writes_nothing_and_fails_loudly(tmp_path, capsys):
    changed = ORIGINAL.replace("line 16\n", "line 16 (upstream changed it)\n")
    src = _tree(tmp_path, changed)
    assert ap.main([str(src), str(tmp_path / "edit.patch")]) == 1
    err = capsys.readouterr().err
    assert "edit.patch: hunk 2 (line 15) does not apply to pkg/file.c" in err
    assert (src / "pkg" / "file.c").read_text() == changed, "the first hunk must not have been written"


def test_applying_twice_fails(tmp_path):
    src = _tree(tmp_path)
    assert ap.main([str(src), str(tmp_path / "edit.patch")]) == 0
    assert ap.main([str(src), str(tmp_path / "edit.patch")]) == 1


def test_a_missing_file_or_a_file_without_diffs_is_an_error(tmp_path):
    src = _tree(tmp_path)
    (src / "pkg" / "file.c").unlink()
    with pytest.raises(ap.PatchError, match="does not exist"):
        ap.apply(src, tmp_path / "edit.patch")
    (tmp_path / "empty.patch").write_text("just words\n")
    with pytest.raises(ap.PatchError, match="no file diffs"):
        ap.apply(src, tmp_path / "empty.patch")


OURS = sorted((REPO / "third_party" / "patches").glob("*.patch"))


@pytest.mark.parametrize("patch", OURS, ids=lambda p: p.name)
def test_our_patches_parse_and_say_why_they_exist(patch):
    assert len(OURS) == 8
    files = ap._parse(patch.read_text())
    assert files and all(hunks for _, hunks in files)
    description = patch.read_text().split("\n--- ", 1)[0]
    assert "Why:" in description


def test_the_command_line_runs_with_the_build_interpreter(tmp_path):
    src = _tree(tmp_path)
    done = subprocess.run([sys.executable, str(SCRIPT), str(src), str(tmp_path / "edit.patch")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "applied edit.patch: pkg/file.c" in done.stdout
