"""The terminal UI (Textual). A shell over the core: screens call :mod:`.services`, never the
engine, store or network directly. Start it with :func:`localllm.tui.app.make_app`."""
