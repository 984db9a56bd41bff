"""The chat settings choose the LoRA adapters of the chat's model and their scales (issue 23): the
dialog lists the installed adapters that fit, and the chat reloads its model with the chosen ones,
through the same option path as ``--lora NAME:SCALE``. With the real SmolLM2 and real adapters."""

from __future__ import annotations

import pytest
from support.chat_pilot import chat_screen, reply_done, send, views, wait_for
from support.scripted_engine import FakeServices

from localllm import app as core
from localllm.tui.app import ChatDefaults, make_app
from localllm.tui.models_screen import ModelsScreen
from localllm.tui.services import Services
from localllm.tui.settings_dialog import SettingsDialog
from tests.support.lora import write_lora

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _choose(pilot, scale: str) -> None:
    """Open the settings, give the one adapter listed ``scale`` ("" = not used), save, wait for the load."""
    app = pilot.app
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: isinstance(app.screen, SettingsDialog))
    app.screen.query_one("#lora-0").value = scale
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: not isinstance(app.screen, SettingsDialog))
    await wait_for(pilot, lambda: not chat_screen(app).loading, 120)


async def _regenerate(pilot) -> str:
    await pilot.press("ctrl+r")
    await pilot.pause(0.2)
    await reply_done(pilot, 120)
    return views(pilot.app)[-1].content


async def test_choosing_an_adapter_and_its_scale_in_the_chat_settings(installed_starter, smollm2_path, tmp_path):
    core.import_file(write_lora(tmp_path / "pirate.gguf", smollm2_path, seed=3, magnitude=0.2), name="pirate")
    core.import_file(write_lora(tmp_path / "qwen.gguf", smollm2_path, arch="qwen2", layers=[0]), name="qwen-lora")
    services = Services()
    target = services.resolve(None)
    defaults = ChatDefaults(settings={"temperature": 0.0, "max_tokens": 8})
    app = make_app(services=services, chat=target, defaults=defaults)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "Name a colour.")
        await reply_done(pilot, 120)
        base = views(app)[-1].content
        assert base and app.holder.model.adapters == {}

        # Only the adapter that fits the chat's model is offered (not the qwen2 one).
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsDialog))
        names = [str(label.render()) for label in app.screen.query("#adapters Label")]
        assert names == ["pirate"]
        bad = app.screen.query_one("#lora-0")
        bad.value = "lots"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SettingsDialog)
        assert str(app.screen.query_one("#error").render()) == "the scale of pirate must be a number, not 'lots'"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsDialog))

        await _choose(pilot, "1")
        model = app.holder.model
        assert list(model.adapters) == ["pirate"] and dict(model.active_adapters) == {"pirate": 1.0}
        assert app.holder.lora == (("pirate", 1.0),) and model.load_report.settings["adapters"]
        changed = await _regenerate(pilot)
        assert changed != base  # the adapter is applied to the reply

        await _choose(pilot, "0")  # loaded but off: exactly the base model's greedy reply
        assert dict(app.holder.model.active_adapters) == {}
        assert list(app.holder.model.adapters) == ["pirate"]
        assert await _regenerate(pilot) == base

        await _choose(pilot, "")  # not used at all
        assert app.holder.model.adapters == {} and app.holder.lora == ()


async def test_the_models_screen_shows_the_adapters_a_catalog_entry_names(tmp_path, monkeypatch):
    from localllm.models.catalog import default_catalog_source

    text = default_catalog_source().read_text(encoding="utf-8")
    second = text.index("\n[[model]]\n", text.index("\n[[model]]\n") + 1)
    adapters = (
        '[[model.adapters]]\nname = "smollm2-pirate"\nrepo = "acme/SmolLM2-pirate-LoRA-GGUF"\n'
        'file = "pirate.gguf"\ndescription = "Pirate talk."\n'
    )
    own = tmp_path / "models.toml"
    own.write_text(text[:second] + "\n" + adapters + text[second:], encoding="utf-8")
    monkeypatch.setenv("LOCALLLM_CATALOG", str(own))
    app = make_app(services=FakeServices())
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await pilot.press("slash", *"smollm2-135m")
        await pilot.pause()
        about = str(screen.query_one("#model-about").render())
        assert "LoRA adapter smollm2-pirate: Pirate talk. (pull it: localllm pull smollm2-pirate)" in about
