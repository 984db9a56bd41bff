"""The standalone build's entry point: the same as the ``localllm`` console script."""

from localllm.cli import entry_point

entry_point()
