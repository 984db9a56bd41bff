from support.serving import serve  # noqa: F401 - the fixture
