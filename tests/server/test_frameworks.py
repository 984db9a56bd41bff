"""The agent frameworks people put on top of an OpenAI-compatible server, used as their own docs
show, against the real llama.cpp with SmolLM2 (issue 27's "done when").

SmolLM2's template renders no tools, so every call here goes through the generic JSON format: the
tools described in a system message, the reply constrained by a grammar built from the tools'
schemas. Where a framework lets its user force a tool (LangChain's tool_choice, instructor's TOOLS
mode, the Agents SDK's model settings) the call is forced, and must be valid every time; where it
does not (pydantic-ai's tools, `llm`), the test asks what a small model can do and checks what
reaches the tool. Nothing leaves 127.0.0.1: tracing and telemetry are off, keys are dummies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from pydantic import BaseModel
from support.serving import MODEL


class City(BaseModel):
    name: str
    country: str


ASK_CITY = "Name the capital of France and its country. Answer in JSON with the keys name and country."
ASK_WEATHER = "What is the weather in Paris?"


@pytest.fixture
def server(serve, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "unused")  # clients that read it must not find a real one
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    return serve()


def base_url(server) -> str:
    return f"{server.url}/v1"


def requests_of(server, path: str) -> int:
    return sum(1 for line in server.log_lines() if f"POST {path} " in line)


# -- LangChain -------------------------------------------------------------------------------


def test_langchain_bind_tools_gets_a_call_with_arguments_from_the_schema(server):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"sunny in {city}"

    chat = ChatOpenAI(model=MODEL, base_url=base_url(server), api_key="unused", temperature=0, max_tokens=80)
    message = chat.bind_tools([get_weather], tool_choice="get_weather").invoke(ASK_WEATHER)
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["args"]["city"]
    assert get_weather.invoke(call["args"]).startswith("sunny in ")  # the arguments fit the tool


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_langchain_with_structured_output_validates_in_every_method(server, method):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model=MODEL, base_url=base_url(server), api_key="unused", temperature=0, max_tokens=80)
    city = chat.with_structured_output(City, method=method).invoke(ASK_CITY)
    assert isinstance(city, City) and city.name and city.country


# -- instructor --------------------------------------------------------------------------------


def test_instructor_default_mode_returns_a_validated_model(server):
    import instructor
    import openai

    client = instructor.from_openai(openai.OpenAI(base_url=base_url(server), api_key="unused", max_retries=0))
    assert client.mode == instructor.Mode.TOOLS  # its default: a forced tool call
    city = client.chat.completions.create(
        model=MODEL,
        response_model=City,
        messages=[{"role": "user", "content": ASK_CITY}],
        max_retries=0,  # a reply that does not validate is a failure here, not a retry
        max_tokens=80,
    )
    assert isinstance(city, City) and city.name and city.country


# -- pydantic-ai -------------------------------------------------------------------------------


def _pydantic_ai_model(server):
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=base_url(server), api_key="unused"))


def test_pydantic_ai_structured_output(server):
    from pydantic_ai import Agent

    agent = Agent(_pydantic_ai_model(server), output_type=City)
    result = agent.run_sync(ASK_CITY, model_settings={"max_tokens": 80, "temperature": 0})
    assert isinstance(result.output, City) and result.output.name and result.output.country


def test_pydantic_ai_tool_is_called_and_its_result_goes_back(server):
    from pydantic_ai import Agent, RunContext
    from pydantic_ai.messages import ModelResponse, ToolReturnPart

    def settings(ctx: RunContext):
        # the first step must call the tool, the next answers (pydantic-ai's per-step settings)
        return {"temperature": 0, "max_tokens": 60, "tool_choice": ["get_weather"] if ctx.run_step == 1 else "none"}

    agent = Agent(_pydantic_ai_model(server), model_settings=settings)
    asked: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        asked.append(city)
        return "Sunny, 24 degrees"

    result = agent.run_sync(ASK_WEATHER)
    assert len(asked) == 1 and asked[0]
    messages = result.all_messages()
    returned = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
    assert [p.content for p in returned] == ["Sunny, 24 degrees"]  # the result went back
    assert isinstance(messages[-1], ModelResponse) and isinstance(result.output, str) and result.output


# -- the OpenAI Agents SDK -----------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_openai_agents_sdk_function_tool(server, api):
    from agents import (
        Agent,
        AsyncOpenAI,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        asked.append(city)
        return "Sunny, 24 degrees"

    client = AsyncOpenAI(base_url=base_url(server), api_key="unused", max_retries=0)
    cls = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel
    agent = Agent(
        name="weather",
        instructions="Answer with the get_weather tool.",
        tools=[get_weather],
        model=cls(model=MODEL, openai_client=client),
        model_settings=ModelSettings(tool_choice="get_weather", temperature=0, max_tokens=60),
        tool_use_behavior="stop_on_first_tool",  # the tool's result is the answer
    )
    result = asyncio.run(Runner.run(agent, ASK_WEATHER, max_turns=3))
    assert len(asked) == 1 and asked[0]
    assert result.final_output == "Sunny, 24 degrees"
    assert [type(i).__name__ for i in result.new_items] == ["ToolCallItem", "ToolCallOutputItem"]


# -- simonw's llm, through its OpenAI-compatible models and the llm-ollama plugin -----------------


def _llm(tmp_path, server, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LLM_USER_PATH": str(tmp_path / "llm"), **env},
    )


TOOL_FUNCTION = """
def get_weather(city: str) -> str:
    "The current weather in a city."
    return "sunny, 24 degrees in " + city
"""


@pytest.mark.parametrize("plugin", ["openai", "ollama"])
def test_llm_cli_with_a_tool(server, tmp_path, plugin):
    (tmp_path / "llm").mkdir()
    if plugin == "openai":  # llm's docs: an OpenAI-compatible model with supports_tools
        entry = {"model_id": "local", "model_name": MODEL, "api_base": base_url(server), "supports_tools": True}
        (tmp_path / "llm" / "extra-openai-models.yaml").write_text(json.dumps([entry]))  # JSON is YAML
        model, env = "local", {"OPENAI_API_KEY": "unused"}
    else:  # llm-ollama lists the server's /api/tags and reads each model's capabilities
        model, env = f"ollama/{MODEL}", {"OLLAMA_HOST": server.url}  # the plugin names them ollama/NAME
    done = _llm(
        tmp_path,
        server,
        *("prompt", "-m", model, "--functions", TOOL_FUNCTION, "--td", "--chain-limit", "2"),
        *("-o", "temperature", "0", ASK_WEATHER),
        env=env,
    )
    out = done.stdout + done.stderr
    # --td prints each call and what the function returned: a valid call ran the real function
    assert "Tool call: get_weather(" in out, out
    assert "sunny, 24 degrees in " in out, out
    # after the result the model answers, or (a 135M model) calls again until llm's chain limit
    assert done.returncode == 0 or "Chain limit of 2 exceeded" in done.stderr, out
    assert requests_of(server, "/v1/chat/completions" if plugin == "openai" else "/api/chat") >= 2
