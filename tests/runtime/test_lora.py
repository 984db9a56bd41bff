"""LoRA adapters with the real SmolLM2 base and adapter files written by the suite (gguf's writer)."""

from __future__ import annotations

import shutil

import pytest

from localllm import runtime
from localllm.errors import AdapterMismatchError, CorruptModelError, ModelFileError, UsageError, one_line
from localllm.gguf.adapter import check_fits, read_adapter
from localllm.gguf.header import read_header
from tests.support.files import damaged_copy
from tests.support.lora import write_lora

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = runtime.SamplingOptions(temperature=0, max_tokens=20)


@pytest.fixture(scope="module")
def adapters(smollm2_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    a = write_lora(folder / "alpha.gguf", smollm2_path, seed=1)
    b = write_lora(folder / "beta.gguf", smollm2_path, seed=2, targets=("attn_k", "ffn_up"), magnitude=0.08)
    twin = folder / "alpha-twin.gguf"
    shutil.copyfile(a, twin)
    return {"a": a, "b": b, "twin": twin, "folder": folder}


def load(base, *specs, n_ctx=256):
    return runtime.Model(base, runtime.LoadOptions(n_ctx=n_ctx, n_threads=2, adapters=tuple(specs)))


def reply(model):
    return model.chat(QUESTION, GREEDY).read()


@pytest.fixture(scope="module")
def base_reply(smollm2_path):
    with load(smollm2_path) as m:
        return reply(m)


def test_adapter_file_is_read_with_rank_alpha_tensors_and_base(adapters):
    info = read_adapter(adapters["a"])
    assert (info.architecture, info.rank, info.alpha) == ("llama", 8, 16.0)
    assert len(info.tensors) == 30 * 3 and "blk.0.attn_q.weight" in info.tensors
    assert info.base_name == "SmolLM2-135M-Instruct"


def test_scale_zero_gives_the_base_models_greedy_reply(smollm2_path, adapters, base_reply):
    with load(smollm2_path, runtime.AdapterSpec(adapters["a"], 0.0)) as m:
        assert m.default_adapters == ()
        assert reply(m) == base_reply


def test_scale_one_changes_the_reply_and_is_recorded(smollm2_path, adapters, base_reply):
    with load(smollm2_path, runtime.AdapterSpec(adapters["a"], 1.0)) as m:
        changed = reply(m)
        settings = m.load_report.settings
    assert changed != base_reply
    assert settings["adapters"] == [
        {"name": "alpha", "path": str(adapters["a"]), "scale": 1.0, "file_size": adapters["a"].stat().st_size}
    ]


def test_two_adapters_combine(smollm2_path, adapters, base_reply):
    a, b, twin = adapters["a"], adapters["b"], adapters["twin"]
    with load(smollm2_path, runtime.AdapterSpec(a, 1.0)) as m:
        only_a = reply(m)
    with load(smollm2_path, runtime.AdapterSpec(b, 1.0)) as m:
        only_b = reply(m)
    with load(smollm2_path, runtime.AdapterSpec(a, 1.0), runtime.AdapterSpec(b, 1.0)) as m:
        both = reply(m)
    assert len({base_reply, only_a, only_b, both}) == 4
    # The effect is linear in the scales: two copies of one adapter at 0.5 are that adapter at 1.
    with load(smollm2_path, runtime.AdapterSpec(a, 0.5), runtime.AdapterSpec(twin, 0.5)) as m:
        assert reply(m) == only_a


def test_switching_adapters_on_a_loaded_model_empties_the_cache(smollm2_path, adapters, base_reply):
    with load(smollm2_path, runtime.AdapterSpec(adapters["a"], 0.0)) as m:
        assert reply(m) == base_reply
        assert m.cached_tokens > 0
        m.set_adapters(m.adapter_set([("alpha", 1.0)]))
        assert m.cached_tokens == 0
        with_a = reply(m)
        m.set_adapters(m.adapter_set([]))
        assert reply(m) == base_reply
    assert with_a != base_reply
    with load(smollm2_path, runtime.AdapterSpec(adapters["a"], 1.0)) as m:
        assert reply(m) == with_a
        with pytest.raises(UsageError, match="no LoRA adapter named 'gamma'"):
            m.adapter_set([("gamma", 1.0)])


def test_an_adapter_for_another_architecture_is_one_line_naming_both(smollm2_path, adapters):
    other = write_lora(adapters["folder"] / "qwen.gguf", smollm2_path, arch="qwen2", layers=[0])
    with pytest.raises(AdapterMismatchError) as caught:
        load(smollm2_path, runtime.AdapterSpec(other))
    line = one_line(caught.value)
    assert "qwen.gguf" in line and smollm2_path.name in line and "qwen2" in line and "\n" not in line


def test_an_adapter_of_other_shapes_is_refused_before_llama_cpp(smollm2_path, adapters):
    wide = write_lora(adapters["folder"] / "wide.gguf", smollm2_path, layers=[3], targets=("attn_q",), n_out_delta=64)
    with pytest.raises(
        AdapterMismatchError, match=r"wide.gguf does not fit SmolLM2.*blk.3.attn_q.weight is \[576, 576\]"
    ):
        load(smollm2_path, runtime.AdapterSpec(wide))
    with pytest.raises(AdapterMismatchError, match="alpha.gguf: that file is an adapter too"):
        check_fits(read_adapter(wide), read_header(adapters["a"]), "alpha.gguf")


def test_a_damaged_adapter_is_handled_like_a_damaged_model(smollm2_path, adapters):
    size = adapters["a"].stat().st_size
    cut = damaged_copy(adapters["a"], adapters["folder"] / "cut.gguf", truncate_to=size // 2)
    with pytest.raises(CorruptModelError, match="cut.gguf"):
        load(smollm2_path, runtime.AdapterSpec(cut))
    with pytest.raises(ModelFileError, match="is not a LoRA adapter"):
        load(smollm2_path, runtime.AdapterSpec(smollm2_path))


def test_batch_requests_with_different_adapters_each_match_a_model_of_their_own(smollm2_path, adapters):
    a, b = adapters["a"], adapters["b"]
    expected = {}
    for key, specs in {
        "base": (),
        "a": (runtime.AdapterSpec(a),),
        "ab": (runtime.AdapterSpec(a), runtime.AdapterSpec(b)),
    }.items():
        with load(smollm2_path, *specs) as m:
            expected[key] = reply(m)
    assert len(set(expected.values())) == 3
    with load(smollm2_path, runtime.AdapterSpec(a, 0.0), runtime.AdapterSpec(b, 0.0)) as m:
        tokens = m.chat_tokens(QUESTION)
        sets = {"base": None, "a": [("alpha", 1.0)], "ab": [("alpha", 1.0), ("beta", 1.0)]}
        requests = [runtime.BatchRequest(key=k, tokens=tokens, sampling=GREEDY, adapters=v) for k, v in sets.items()]
        with runtime.BatchSession(m, 3, 256) as session:
            got = {r.key: r.text for r in session.run(requests)}
    assert got == expected
