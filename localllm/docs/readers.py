"""Files to text, one reader per format. A reader returns the text, or raises :class:`Unreadable`
with the reason a summary line shows (no text layer, not UTF-8, binary ...)."""

from __future__ import annotations

import html.parser
import re
import zipfile
from pathlib import Path

MAX_BYTES = 20 * 1024 * 1024  # a bigger file (a 2 GB log) is skipped with a line, never read

TEXT_SUFFIXES = {
    ".md", ".markdown", ".txt", ".rst", ".org", ".tex", ".csv", ".tsv", ".json", ".yaml", ".yml", ".toml",
    ".ini", ".cfg", ".conf", ".log", ".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".c", ".h", ".cc", ".cpp",
    ".hpp", ".rs", ".go", ".java", ".kt", ".swift", ".rb", ".php", ".sh", ".bash", ".zsh", ".fish", ".sql",
    ".lua", ".r", ".scala", ".cs", ".m", ".mm", ".pl", ".hs", ".ex", ".exs", ".erl", ".clj", ".el", ".vim",
    ".css", ".scss", ".xml", ".svg", ".make", ".cmake", ".dockerfile", "",
}  # fmt: skip
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}


class Unreadable(Exception):
    """The file gives no text; ``str()`` is the reason."""


def kind(path: Path) -> str:
    s = path.suffix.lower()
    if s in HTML_SUFFIXES:
        return "html"
    if s == ".pdf":
        return "pdf"
    if s == ".docx":
        return "docx"
    if s in MARKDOWN_SUFFIXES:
        return "markdown"
    return "text"


def read(path: Path, data: bytes) -> str:
    """The text of the file ``path`` whose bytes are ``data``."""
    k = kind(path)
    if k == "pdf":
        return _pdf(data)
    if k == "docx":
        return _docx(data)
    if b"\x00" in data[:8192]:
        raise Unreadable("binary file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text (byte {exc.start})") from None
    if k == "html":
        return _html(text)
    return text


class _HTMLText(html.parser.HTMLParser):
    SKIP = {"script", "style", "head", "noscript"}
    BLOCK = {"p", "div", "br", "li", "tr", "section", "article", "pre", "table", "ul", "ol", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def _html(text: str) -> str:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return re.sub(r"\n{3,}", "\n\n", "".join(parser.parts)).strip() + "\n"


def _docx(data: bytes) -> str:
    import io
    import xml.etree.ElementTree as ET

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            xml = z.read("word/document.xml")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise Unreadable(f"not a Word document ({exc})") from None
    ns = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
    paragraphs = []
    for p in ET.fromstring(xml).iter(f"{ns}p"):
        style = p.find(f"{ns}pPr/{ns}pStyle")
        text = "".join(t.text or "" for t in p.iter(f"{ns}t"))
        level = re.fullmatch(r"Heading(\d)", style.get(f"{ns}val", "")) if style is not None else None
        paragraphs.append(("#" * int(level.group(1)) + " " + text) if level and text else text)
    return "\n\n".join(p for p in paragraphs if p) + "\n"


def _pdf(data: bytes) -> str:
    import io

    try:
        import pypdf
    except ImportError:
        raise Unreadable("PDF support needs pypdf (pip install pypdf)") from None
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (pypdf.errors.PdfReadError, ValueError, KeyError) as exc:
        raise Unreadable(f"damaged PDF ({exc})") from None
    text = "\n\n".join(f"<!-- page {i} -->\n{t.strip()}" for i, t in enumerate(pages, 1) if t.strip())
    if not text.strip():
        raise Unreadable("PDF without a text layer (scanned?)")
    return text + "\n"
