"""``serve --draft ngram`` (issue 28): the same replies as without drafts, through the official
OpenAI client, and the drafts in the server's log line."""

from __future__ import annotations

import openai

from localllm.app.serving import ServeOptions

PASSAGE = (
    "Local models run on your own machine, keep your data private, and work without a network "
    "connection. They are slower than hosted ones but cost nothing per token."
)
MESSAGES = [{"role": "user", "content": f"Repeat the following text exactly, word for word:\n\n{PASSAGE}"}]


def _reply(server) -> str:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    completion = client.chat.completions.create(
        model="smollm2-135m-instruct:Q4_1", messages=MESSAGES, temperature=0, max_tokens=60
    )
    return completion.choices[0].message.content or ""


def test_ngram_drafts_give_the_plain_reply_and_are_logged(serve):
    plain = serve(ServeOptions(n_ctx_seq=1024, n_parallel=1))
    expected = _reply(plain)
    drafted = serve(ServeOptions(n_ctx_seq=1024, n_parallel=1, draft="ngram"))
    assert _reply(drafted) == expected
    assert "your own machine" in expected
    line = next(line for line in drafted.log_lines() if "/v1/chat/completions" in line)
    assert " drafts=" in line and " accepted" in line
    assert not any(" drafts=" in line for line in plain.log_lines())
