"""Exceptions raised by the core.

Every error a user can cause is a subclass of :class:`LocalLLMError`. The message is one line that
says what went wrong; ``hint`` says what the user can do next. The shells print both and exit with
``exit_code``; they never show a traceback unless asked (``--debug``).
"""

from __future__ import annotations


class LocalLLMError(Exception):
    """Base of every error the shells turn into one line on stderr."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


def one_line(exc: BaseException) -> str:
    """How every shell shows an error: ``message (hint)`` on one line (any exception: its text)."""
    message = exc.message if isinstance(exc, LocalLLMError) else str(exc)
    hint = getattr(exc, "hint", None)
    text = f"{message} ({hint})" if hint else message
    return " ".join(text.splitlines())


class UsageError(LocalLLMError):
    """The command line or its input is wrong (``field``: the request field at fault, if known)."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message, hint)
        self.field = field


class ToolSpecError(UsageError):
    """A request's tools cannot be used: a bad tool list, a tool_choice naming an unknown function,
    or a parameters schema the grammar cannot follow (the server answers 400)."""


class CatalogError(LocalLLMError):
    """models.toml is malformed; the message names the entry and field."""


class ModelNotFoundError(LocalLLMError):
    """A model reference matches nothing (catalog, installed models, files)."""

    def __init__(self, message: str, hint: str | None = None, suggestions: list[str] | None = None):
        super().__init__(message, hint)
        self.suggestions = suggestions or []


class ModelFileError(LocalLLMError):
    """A model file is missing, unreadable, or not usable."""


class NotAGGUFError(ModelFileError):
    """The file is not a GGUF file at all."""


class CorruptModelError(ModelFileError):
    """The file is a GGUF but truncated or damaged."""


class UnsupportedArchitectureError(ModelFileError):
    """llama.cpp does not know the model's architecture."""


class EstimateError(ModelFileError):
    """The GGUF header lacks what the memory estimate needs (an unknown or damaged architecture)."""


class ModelLoadError(ModelFileError):
    """llama.cpp refused to load the model for another reason (memory, format)."""


class AdapterMismatchError(ModelFileError):
    """A LoRA adapter was made for another base model (architecture or tensor shapes)."""


class DraftMismatchError(ModelFileError):
    """A draft model for speculative decoding has another vocabulary than the model it drafts for."""


class DoesNotFitError(LocalLLMError):
    """No quantization of a model fits this machine's memory."""


class ContextOverflowError(LocalLLMError):
    """The prompt does not fit in the context window."""


class GenerationError(LocalLLMError):
    """llama.cpp failed while evaluating or generating."""


class StarterModelError(LocalLLMError):
    """The starter model could not be fetched through pip."""


class NetworkError(LocalLLMError):
    """A network operation failed (no connection, server error)."""


class EndpointsDownError(NetworkError):
    """Every server a batch was spread over stopped answering; the results written so far are kept
    and the same command goes on from there."""

    exit_code = 4


class GrammarError(LocalLLMError):
    """A JSON schema (or grammar) for structured output cannot be turned into a grammar."""


class OutputError(LocalLLMError):
    """An output file could not be written (a full disk, an I/O error); what was written is kept."""


class QueueFullError(LocalLLMError):
    """Every sequence of a batch engine runs and its queue is full; try again after ``retry_after_s``."""

    def __init__(self, message: str, hint: str | None = None, retry_after_s: float = 1.0) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s


class EngineClosedError(LocalLLMError):
    """A batch engine was closed (or stopped after an error) and takes no more requests."""


class ServerBusyError(LocalLLMError):
    """The server cannot take a request now (every loaded model is busy and another must load);
    ``retry_after_s`` says when to try again (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, hint: str | None = None, retry_after_s: float = 1.0) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s


class DocumentsError(LocalLLMError):
    """A document collection cannot be used: unknown, already there, or built with another embedding model."""


class CollectionNotFoundError(DocumentsError):
    """No document collection has the name given (HTTP 404 in serve)."""


class RPCUnavailableError(UsageError):
    """``--rpc`` or ``rpc-server`` asked of a llama.cpp build without the RPC backend (GGML_RPC)."""


class RPCWorkerError(LocalLLMError):
    """An RPC worker (``--rpc HOST:PORT``) cannot be used: nothing listens there, it is busy with
    another client, it speaks another protocol version, or ``rpc-server`` cannot listen."""
