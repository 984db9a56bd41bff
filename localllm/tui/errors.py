"""How the TUI shows an error: one notification, ``message (hint)``, never parsed as markup (a file
name with brackets in it is shown as it is)."""

from __future__ import annotations

from textual.dom import DOMNode
from textual.notifications import SeverityLevel

from localllm.errors import one_line


def notify_error(
    node: DOMNode, error: BaseException, *, title: str, severity: SeverityLevel = "error", timeout: float = 8
) -> None:
    """Notify ``error`` from any widget, screen or the app."""
    node.app.notify(one_line(error), title=title, severity=severity, timeout=timeout, markup=False)
