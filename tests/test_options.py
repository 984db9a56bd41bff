"""The option schema (localllm.options): one set of limits and defaults that every surface reads,
each error naming the option as that surface spells it (issue 20)."""

from __future__ import annotations

import math

import pytest

from localllm import options
from localllm.app.options import check
from localllm.runtime.options import SamplingOptions


def test_the_runtime_defaults_are_the_schemas():
    defaults = SamplingOptions()
    for name, option in options.SAMPLING.items():
        assert getattr(defaults, name) == option.default, name


@pytest.mark.parametrize("name", list(options.OPTIONS))
def test_every_option_refuses_what_is_not_a_value_in_range(name):
    option = options.OPTIONS[name]
    for bad in (True, "1", math.nan, math.inf, option.low - 1, option.high + 1, [1]):
        with pytest.raises(options.OptionError) as caught:
            option.check(bad, f"<{name}>")
        assert caught.value.message.startswith(f"<{name}> must be ") and caught.value.option == name
    assert option.check(option.low) == option.low and option.check(option.high) == option.high
    assert type(option.check(option.low)) is option.kind


def test_a_huge_integer_is_an_option_error_not_an_overflow():
    with pytest.raises(options.OptionError, match="seed"):
        options.SAMPLING["seed"].check(10**5000, "seed")
    with pytest.raises(options.OptionError, match="temperature"):
        options.SAMPLING["temperature"].check(10**5000, "temperature")


def test_check_names_the_cli_flag():
    with pytest.raises(options.OptionError, match="^--max-tokens must be a whole number from 1 to"):
        check(max_tokens=-3)
    with pytest.raises(options.OptionError, match="^--repeat-penalty must be a number from 0 to 10, not 11"):
        check(repeat_penalty=11.0)
    check(ctx=options.MIN_CTX_ASKED, parallel=options.MAX_PARALLEL, top_p=0.0, seed=None)


def test_text_is_parsed_to_the_options_type_or_refused_as_typed():
    assert options.SAMPLING["top_k"].parse(" 7 ") == 7
    assert options.SAMPLING["top_p"].parse("0.5") == 0.5
    assert options.SAMPLING["seed"].parse("") is None
    with pytest.raises(options.OptionError, match="^Top-k must be a whole number from -1 to 1,048,576, not 1.5$"):
        options.SAMPLING["top_k"].parse("1.5", "Top-k")
    with pytest.raises(options.OptionError, match=r"not '\\x1b\[2J'$"):
        options.SAMPLING["top_p"].parse("\x1b[2J", "top_p")  # shown escaped, never drives the terminal


def test_saved_settings_the_schema_refuses_fall_back_to_the_defaults():
    """A conversation saved by a version whose /set took top_p 50 (or edited by hand) still opens:
    what the schema refuses is left at its default."""
    from localllm import app

    sampling = app.sampling(top_p=50, temperature="hot", top_k=5, max_tokens=-3, seed=None, colour="red")
    assert (sampling.top_p, sampling.temperature, sampling.top_k) == (0.95, 0.8, 5)
    assert sampling.max_tokens is None and sampling.seed is None
    assert app.sampling(max_tokens=7, ignore_eos=True) == SamplingOptions(max_tokens=7, ignore_eos=True)


def test_the_planners_smallest_context_is_not_the_smallest_a_user_may_ask_for():
    from localllm.fit import plan

    assert options.MIN_CTX_ASKED < plan.MIN_CTX_PLANNED
    assert plan.MAX_PARALLEL is options.MAX_PARALLEL


def test_one_default_context_rule():
    from localllm.runtime.options import DEFAULT_CTX, default_ctx

    assert default_ctx(None, None) == default_ctx(None, 0) == DEFAULT_CTX
    assert default_ctx(None, 2048) == 2048 and default_ctx(None, 1 << 20) == DEFAULT_CTX
    assert default_ctx(100, 2048) == 100
