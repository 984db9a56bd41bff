"""localllm: run open-weight language models privately on your own machine."""

__version__ = "0.1.0"
