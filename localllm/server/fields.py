"""Request bodies read and checked: JSON within the size limit, each field of the right type and
range, or a 400 that names the field (413 for a body over the limit)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from localllm.app.options import LOADING, SAMPLING, Option, OptionError
from localllm.app.serving import GenerateRequest, parse_keep_alive

from .problems import RequestError

MAX_STOP = 16  # stop strings in one request
MAX_CHOICES = 16  # OpenAI's n
MAX_PROMPTS = 64  # prompts in one /v1/completions request
MAX_BIAS = 1024  # logit_bias entries


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes, 400 for anything but a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    try:
        value = json.loads(bytes(body), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, nesting too deep
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "nested too deep"
        raise RequestError(f"the body is not valid JSON: {why}") from None
    if not isinstance(value, dict):
        raise RequestError("the body must be a JSON object")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone UTF-16 surrogate escape such as "\ud800"
        raise RequestError("the body holds a lone UTF-16 surrogate escape (such as \\ud800) in a string") from None
    return value


def _too_large(limit: int) -> RequestError:
    return RequestError(f"the body is larger than {limit // (1 << 20)} MiB", status=413)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


class Fields:
    """Typed access to a request body's fields; each getter returns None when the field is absent
    (or null) and raises RequestError naming it when it has the wrong type or range."""

    def __init__(self, body: dict[str, Any], prefix: str = "") -> None:
        self.body = body
        self.prefix = prefix

    def _bad(self, name: str, what: str) -> RequestError:
        return RequestError(f"'{self.prefix}{name}' must be {what}", param=f"{self.prefix}{name}")

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self.body.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value):
            raise self._bad(name, "a non-empty string" if required else "a string")
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.body.get(name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(name, "an integer")
        if not low <= value <= high:
            raise self._bad(name, f"from {low} to {high}")
        return value

    def stop(self, name: str = "stop") -> tuple[str, ...]:
        value = self.body.get(name)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or len(value) > MAX_STOP or not all(isinstance(s, str) for s in value):
            raise self._bad(name, f"a string or a list of at most {MAX_STOP} strings")
        return tuple(s for s in value if s)

    def keep_alive(self, name: str = "keep_alive") -> float | None:
        value = self.body.get(name)
        if value is None:
            return None
        try:
            return parse_keep_alive(value)
        except ValueError as exc:
            raise RequestError(str(exc), param=name) from None

    def option(self, option: Option, name: str) -> Any:
        """Field ``name``, checked as the schema's ``option`` (None when absent or null)."""
        spelled = f"{self.prefix}{name}"
        try:
            return option.check(self.body.get(name), f"'{spelled}'")
        except OptionError as exc:
            raise RequestError(exc.message, param=spelled) from None

    def openai_sampling(self) -> dict[str, Any]:
        """The sampling options by localllm's names, from OpenAI's fields (the first given, where
        OpenAI has two names: ``max_completion_tokens`` before ``max_tokens``)."""
        values: dict[str, Any] = {}
        for name, option in SAMPLING.items():
            given = [v for v in (self.option(option, field) for field in option.openai) if v is not None]
            values[name] = given[0] if given else None
        return values

    def ollama_sampling(self) -> dict[str, Any]:
        """The sampling options by localllm's names, from Ollama's ``options`` fields. num_predict
        of 0 or less (-1: no limit, -2: fill the context) is no limit."""
        values: dict[str, Any] = {}
        for name, option in SAMPLING.items():
            field = option.ollama
            value = self.body.get(field) if field else None
            if field is None or (name == "max_tokens" and isinstance(value, int) and -2 <= value <= 0):
                values[name] = None
            else:
                values[name] = self.option(option, field)
        return values


def _text_of(content: object, where: str) -> str:
    """A message's text: a string, or OpenAI's list of parts (text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return "".join(texts)
        raise RequestError(f"'{where}' may hold only text parts: images and audio are not supported", param=where)
    raise RequestError(f"'{where}' must be a string or a list of text parts", param=where)


def messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """The chat ``messages``: a non-empty list of {"role", "content"}."""
    value = body.get("messages")
    if not isinstance(value, list) or not value:
        raise RequestError('\'messages\' must be a non-empty list of {"role", "content"} objects', param="messages")
    result = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"'messages[{i}]' must be an object with a string 'role'", param=f"messages[{i}]")
        content = message.get("content")
        text = "" if content is None else _text_of(content, f"messages[{i}].content")
        role = "system" if message["role"] == "developer" else message["role"]  # OpenAI's newer name
        result.append({"role": role, "content": text})
    return result


def openai_schema(body: dict[str, Any]) -> object | None:
    """``response_format``: text (None), json_object (any object) or json_schema (its schema)."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise RequestError(
            '\'response_format\' must be {"type": "text" | "json_object" | "json_schema"}', param="response_format"
        )
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    inner = fmt.get("json_schema")
    schema = inner.get("schema") if isinstance(inner, dict) else None
    if not isinstance(schema, dict):
        raise RequestError("'response_format.json_schema.schema' must be a JSON schema object", param="response_format")
    return schema


def choices(body: dict[str, Any]) -> int:
    """OpenAI's ``n``: how many choices to sample (1 to MAX_CHOICES)."""
    return Fields(body).integer("n", 1, MAX_CHOICES) or 1


def _is_ids(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def token_inputs(value: object, name: str, limit: int) -> list[str | tuple[int, ...]]:
    """OpenAI's ``prompt`` / ``input``: a string, a list of strings, a list of token ids or a list
    of such lists; each non-empty, at most ``limit`` of them."""
    what = f"a non-empty string or token-id list, or a list of 1 to {limit} of them"
    if isinstance(value, str) or (_is_ids(value) and value):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > limit:
        raise RequestError(f"'{name}' must be {what}", param=name)
    result: list[str | tuple[int, ...]] = []
    for item in value:
        if not (isinstance(item, str) or _is_ids(item)):
            raise RequestError(f"'{name}' must be {what}", param=name)
        if not item:
            raise RequestError(f"'{name}' must not be empty (nor hold an empty string or token list)", param=name)
        result.append(item if isinstance(item, str) else tuple(item))
    return result


def logit_bias(body: dict[str, Any]) -> tuple[tuple[int, float], ...]:
    """OpenAI's ``logit_bias``: {"token id": bias from -100 to 100}."""
    value = body.get("logit_bias")
    if value is None:
        return ()
    what = 'an object of {"token id": bias from -100 to 100}'
    if not isinstance(value, dict) or len(value) > MAX_BIAS:
        raise RequestError(f"'logit_bias' must be {what} (at most {MAX_BIAS})", param="logit_bias")
    result = []
    for key, bias in value.items():
        if (
            not (key.isascii() and key.isdigit() and len(key) <= 10)
            or isinstance(bias, bool)
            or not isinstance(bias, (int, float))
            or not -100 <= bias <= 100
        ):
            raise RequestError(f"'logit_bias' must be {what}: not {key!r}: {bias!r}", param="logit_bias")
        result.append((int(key), float(bias)))
    return tuple(result)


def openai_request(body: dict[str, Any], *, chat: bool) -> GenerateRequest:
    """A chat completion (``chat``) or a completion request (its first prompt: see
    :func:`token_inputs` for the others), checked."""
    f = Fields(body)
    choices(body)
    common = dict(
        model=f.string("model"),
        schema=openai_schema(body),
        ignore_eos=f.boolean("ignore_eos") or False,
        stop=f.stop(),
        adapters=lora(body),
        logit_bias=logit_bias(body),
        docs=f.string("docs"),
        **f.openai_sampling(),
    )
    if chat:
        return GenerateRequest(messages=messages(body), **common)
    prompt = token_inputs(body.get("prompt"), "prompt", MAX_PROMPTS)[0]
    if isinstance(prompt, tuple):
        return GenerateRequest(prompt_ids=prompt, **common)
    return GenerateRequest(prompt=prompt, **common)


MAX_LORA_SCALE = 100.0


def lora(body: dict[str, Any]) -> list[tuple[int | str, float]] | None:
    """llama-server's ``lora``: ``[{"id": N, "scale": S}, ...]`` (an adapter's ``name`` may stand
    for its id); None when absent."""
    value = body.get("lora")
    if value is None:
        return None
    bad = RequestError('\'lora\' must be a list of {"id": N, "scale": S}', param="lora")
    if not isinstance(value, list) or len(value) > 64:
        raise bad
    chosen: list[tuple[int | str, float]] = []
    for item in value:
        if not isinstance(item, dict):
            raise bad
        ident = item.get("id", item.get("name"))
        scale = item.get("scale", 1.0)
        if isinstance(ident, bool) or not isinstance(ident, (int, str)):
            raise bad
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not abs(scale) <= MAX_LORA_SCALE:
            raise RequestError(
                f"'lora' scales must be numbers from -{MAX_LORA_SCALE:g} to {MAX_LORA_SCALE:g}", param="lora"
            )
        chosen.append((ident, float(scale)))
    return chosen


def ollama_schema(body: dict[str, Any]) -> object | None:
    """Ollama's ``format``: "json" (any JSON object) or a JSON schema."""
    fmt = body.get("format")
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "object"}
    if isinstance(fmt, dict):
        return fmt
    raise RequestError("'format' must be \"json\" or a JSON schema object")


def ollama_request(body: dict[str, Any], *, chat: bool) -> GenerateRequest:
    """An /api/chat (``chat``) or /api/generate request, checked. Of the options, num_ctx is read
    but the context is the server's (--ctx): it is set when the model loads."""
    f = Fields(body)
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise RequestError("'options' must be an object")
    o = Fields(options, "options.")
    o.option(LOADING["ctx"], "num_ctx")  # read and checked as --ctx; the context is the server's
    common = dict(
        model=f.string("model"),
        schema=ollama_schema(body),
        keep_alive_s=f.keep_alive(),
        stop=o.stop(),
        docs=f.string("docs"),
        **o.ollama_sampling(),
    )
    if chat:
        return GenerateRequest(messages=messages(body), **common)
    prompt = f.string("prompt") or ""
    if f.boolean("raw"):
        return GenerateRequest(prompt=prompt, **common)
    turns = [{"role": "user", "content": prompt}]
    system = f.string("system")
    if system:
        turns.insert(0, {"role": "system", "content": system})
    return GenerateRequest(messages=turns, **common)
