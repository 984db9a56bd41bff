from localllm.cli import entry_point

entry_point()
