"""``localllm eval --tasks``: multiple-choice accuracy by log-likelihood on the real SmolLM2, with
a handmade task file whose answers the model knows; malformed lines are error records; a second
run onto the same output skips what it holds (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localllm.eval import tasks

KNOWN = [
    {"id": "capital", "context": "Question: What is the capital of France?\nAnswer:",
     "choices": [" Paris", " a purple banana", " Tuesday"], "answer": 0},
    {"id": 2, "context": "One, two, three, four,", "choices": [" elephant", " five"], "answer": 1},
]  # fmt: skip


def _task_file(tmp_path: Path) -> Path:
    lines = [json.dumps(t) for t in KNOWN]
    lines.insert(1, '{"id": "bad", "context": "x", "choices": "not a list", "answer": 0}')
    lines.append("this is not JSON")
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_known_answers_are_chosen_and_bad_lines_are_error_records(smollm2_path: Path, tmp_path: Path, cli):
    out = tmp_path / "out.jsonl"
    done = cli("eval", str(smollm2_path), "--tasks", str(_task_file(tmp_path)), "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["tasks"] == 2 and summary["acc"] == 1.0 and summary["errors"] == 2
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {json.dumps(r["id"]): r for r in records}
    capital = by_id['"capital"']
    assert capital["predicted"] == 0 and capital["correct"] and capital["text"] == " Paris"
    assert capital["loglikelihoods"][0] == max(capital["loglikelihoods"])
    assert by_id["2"]["predicted"] == 1 and by_id["2"]["correct_norm"]
    bad = by_id['"bad"']
    assert bad["line"] == 2 and "choices" in bad["error"]
    assert any(r.get("line") == 4 and "JSON" in r["error"] for r in records)

    again = cli("eval", str(smollm2_path), "--tasks", str(_task_file(tmp_path)), "-o", str(out), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["skipped"] == 4
    assert len(out.read_text().splitlines()) == len(records)  # nothing answered twice


def test_choice_tokens_split_as_lm_eval_does():
    def tokenize(text: str) -> list[int]:  # one token per word, spaces kept with the word after them
        return [hash(w) % 1000 for w in text.replace(" ", "\0 ").split("\0") if w]

    ctx, cont = tasks.choice_tokens(tokenize, "The sky is ", "blue")
    assert ctx == tokenize("The sky is") and cont == tokenize(" blue")


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"context": "c", "choices": ["a", "b"]}', '"id" is required'),
        ('{"id": 1, "context": 3, "choices": ["a", "b"]}', '"context" must be a string'),
        ('{"id": 1, "context": "c", "choices": ["a"]}', "at least two"),
        ('{"id": 1, "context": "c", "choices": ["a", "b"], "answer": 2}', '"answer" must be the index'),
        ('{"id": 1, "context": "c", "choices": ["a", "b"], "answer": true}', '"answer" must be the index'),
        ("[1, 2]", "JSON object"),
    ],
)
def test_malformed_lines_say_what_is_wrong(line: str, message: str):
    with pytest.raises(tasks.TaskLineError, match=message):
        tasks.parse_task(line)
