"""Children that a test stops with Ctrl-C (SIGINT) start with SIGINT at its default.

A suite started with SIGINT ignored (a background ``nohup``, as some runners do) passes the
ignore on to every child, and Python keeps an inherited ``SIG_IGN``: the child would never see
the test's Ctrl-C. ``subprocess``'s ``restore_signals`` only covers SIGPIPE and SIGXFSZ, so the
child resets SIGINT itself before it execs (``preexec_fn=default_sigint``; the tests call
``Popen`` from the main thread)."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
