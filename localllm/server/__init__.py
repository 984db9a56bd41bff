"""The HTTP shell: OpenAI- and Ollama-compatible endpoints over :mod:`localllm.app.serving`.

Starlette on uvicorn: both maintained, small, with real ASGI streaming (server-sent events and
NDJSON flow as tokens come) and uvicorn's graceful shutdown (Ctrl-C lets streams in flight end).
Nothing here decides which model, how to load it or how to sample: each route parses a request,
makes one call to the :class:`~localllm.app.serving.ModelManager`, and writes what comes back.

- :mod:`.app`: the application (:func:`~.app.create_app`) and its settings.
- :mod:`.openai_api`, :mod:`.ollama_api`: the two APIs' routes.
- :mod:`.fields`: request bodies read and checked (400 naming the field).
- :mod:`.problems`: errors mapped to statuses and each API's error body, in one place.
- :mod:`.middleware`: the API key, the body limit and the one log line per request.
- :mod:`.running`: uvicorn started, and stopped on Ctrl-C after a grace period.
"""
