"""The files of a collection's paths: folders recursively, ``.gitignore`` respected, ``.git`` and
hidden folders skipped, symlinks followed once (a loop is reported, not walked forever)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Found:
    path: Path  # absolute, resolved
    problem: str | None = None  # why it is skipped, for the summary (None: to read)


class _Ignore:
    """The patterns of one ``.gitignore``, relative to its folder (the common subset: globs,
    ``/`` anchors, trailing ``/`` for folders, ``!`` negation, ``**``)."""

    def __init__(self, folder: Path, lines: list[str]) -> None:
        self.folder = folder
        self.rules: list[tuple[bool, bool, bool, str]] = []
        for raw in lines:
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = line[1:] if negate else line
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            self.rules.append((negate, dir_only, anchored, line.lstrip("/")))

    def ignored(self, path: Path, is_dir: bool) -> bool | None:
        try:
            rel = path.relative_to(self.folder).as_posix()
        except ValueError:
            return None
        verdict = None
        for negate, dir_only, anchored, pattern in self.rules:
            if dir_only and not is_dir:
                continue
            target = rel if anchored else path.name
            if fnmatch.fnmatchcase(target, pattern) or (
                anchored and fnmatch.fnmatchcase(rel, pattern.replace("**/", ""))
            ):
                verdict = not negate
        return verdict


def files(roots: list[Path]) -> Iterator[Found]:
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        root = Path(os.path.abspath(root))
        if not root.exists():
            yield Found(root, "not found")
        elif root.is_file():
            yield Found(root.resolve())
        else:
            yield from _walk(root, [], seen_dirs)


def _walk(folder: Path, ignores: list[_Ignore], seen: set[tuple[int, int]]) -> Iterator[Found]:
    try:
        st = folder.stat()
    except OSError as exc:
        yield Found(folder, f"cannot open folder ({exc.strerror})")
        return
    if (st.st_dev, st.st_ino) in seen:
        yield Found(folder, "symlink loop (folder already indexed)")
        return
    seen.add((st.st_dev, st.st_ino))
    gitignore = folder / ".gitignore"
    if gitignore.is_file():
        try:
            ignores = [*ignores, _Ignore(folder, gitignore.read_text(errors="replace").splitlines())]
        except OSError:
            pass  # an unreadable .gitignore ignores nothing; the folder is still walked
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        yield Found(folder, f"cannot list folder ({exc.strerror})")
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if _is_ignored(ignores, path, is_dir):
            continue
        if is_dir:
            yield from _walk(path, ignores, seen)
        elif entry.is_file():
            yield Found(path)
        elif entry.is_symlink():
            yield Found(path, "broken or looping symlink")


def _is_ignored(ignores: list[_Ignore], path: Path, is_dir: bool) -> bool:
    verdict = False
    for ignore in ignores:  # the deepest .gitignore decides last
        v = ignore.ignored(path, is_dir)
        if v is not None:
            verdict = v
    return verdict
