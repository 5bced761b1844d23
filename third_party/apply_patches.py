"""Applies unified-diff patch files to a source tree, strictly: every hunk's old lines must be found in
the file as they are (at the stated line or, failing that, at exactly one other place), else nothing of
that patch is written and the exit status is 1 with a message naming the patch, file and hunk.

Used by third_party/crt.cmake on the extracted awscrt sources. Python rather than `patch`/`git apply`:
the build always has the interpreter it builds for, not always those tools. Text before a patch's first
`--- ` line is its description and is ignored.

    python apply_patches.py SOURCE_DIR PATCH...
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,(\d+))? @@")


class PatchError(Exception):
    pass


def _parse(text: str) -> list[tuple[str, list[tuple[int, list[str], list[str]]]]]:
    """Returns [(path, [(old_start, old_lines, new_lines), ...]), ...]. A hunk's extent comes from the
    line counts in its header, so an empty line (a blank context line whose space an editor removed)
    still counts as context."""
    files: list[tuple[str, list[tuple[int, list[str], list[str]]]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not (lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            i += 1
            continue
        path = lines[i + 1][4:].split("\t")[0].strip()
        if path.startswith("b/"):
            path = path[2:]
        hunks: list[tuple[int, list[str], list[str]]] = []
        i += 2
        while i < len(lines) and (m := _HUNK.match(lines[i])):
            old_left = int(m.group(2) or 1)
            new_left = int(m.group(3) or 1)
            old: list[str] = []
            new: list[str] = []
            i += 1
            while old_left or new_left:
                if i >= len(lines):
                    raise PatchError(f"{path}: hunk at line {m.group(1)} is truncated")
                tag, body = lines[i][:1], lines[i][1:]
                if tag in (" ", ""):
                    old.append(body)
                    new.append(body)
                    old_left -= 1
                    new_left -= 1
                elif tag == "-":
                    old.append(body)
                    old_left -= 1
                elif tag == "+":
                    new.append(body)
                    new_left -= 1
                elif tag != "\\":
                    raise PatchError(f"{path}: unexpected line in hunk: {lines[i]!r}")
                i += 1
            if old_left < 0 or new_left < 0:
                raise PatchError(f"{path}: hunk at line {m.group(1)} has more lines than its header says")
            hunks.append((int(m.group(1)), old, new))
        if not hunks:
            raise PatchError(f"no hunks for {path}")
        files.append((path, hunks))
    if not files:
        raise PatchError("no file diffs found")
    return files


def _apply_hunks(name: str, path: str, text: str, hunks: list[tuple[int, list[str], list[str]]]) -> str:
    lines = text.split("\n")
    shift = 0
    for n, (start, old, new) in enumerate(hunks, 1):
        at = start - 1 + shift
        if lines[at : at + len(old)] != old:
            found = [k for k in range(len(lines) - len(old) + 1) if lines[k : k + len(old)] == old]
            if len(found) != 1:
                why = "not found" if not found else f"found {len(found)} times"
                raise PatchError(
                    f"{name}: hunk {n} (line {start}) does not apply to {path}: its old text is {why}. "
                    "The sources differ from the version the patch was written for."
                )
            at = found[0]
        lines[at : at + len(old)] = new
        shift = at + len(new) - (start - 1 + len(old))
    return "\n".join(lines)


def apply(source_dir: Path, patch: Path) -> list[Path]:
    """Applies one patch file; returns the files written. Writes nothing unless every hunk applies."""
    updated: dict[Path, str] = {}
    for path, hunks in _parse(patch.read_text()):
        target = source_dir / path
        if not target.is_file():
            raise PatchError(f"{patch.name}: {path} does not exist under {source_dir}")
        updated[target] = _apply_hunks(patch.name, path, updated.get(target) or target.read_text(), hunks)
    for target, text in updated.items():
        target.write_text(text)
    return list(updated)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    source_dir = Path(argv[0])
    for patch in map(Path, argv[1:]):
        try:
            written = apply(source_dir, patch)
        except (PatchError, OSError) as err:
            print(f"apply_patches: {err}", file=sys.stderr)
            return 1
        print(f"applied {patch.name}: {', '.join(str(p.relative_to(source_dir)) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
