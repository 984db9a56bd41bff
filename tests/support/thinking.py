"""A reasoning model for tests: the real SmolLM2 GGUF given a Qwen 3 style chat template (ChatML
turns, a generation prompt that opens ``<think>`` for the model, ``enable_thinking`` false writing
an empty block), so that what the model writes starts inside reasoning, as with Qwen 3 or
DeepSeek R1. Earlier assistant turns are rendered from their content alone (the reasoning of past
turns is not part of the prompt, as those templates do)."""

from __future__ import annotations

from pathlib import Path

from support import ggufedit

THINKING_TEMPLATE = """
{%- for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false %}<think>

</think>

{% else %}<think>
{% endif %}{% endif %}
"""


def thinking_model(smollm2_path: Path, dest: Path) -> Path:
    """Write SmolLM2 with :data:`THINKING_TEMPLATE` to ``dest`` (its tensors unchanged)."""
    parts = ggufedit.split(smollm2_path, keep_data=True)
    return ggufedit.write(dest, parts, {"tokenizer.chat_template": THINKING_TEMPLATE})
