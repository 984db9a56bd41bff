"""models.resolve and hub.pull agree on which installed file a Hub file reference names
(``owner/repo/dir/x.gguf``): the file of that base name, never one whose name merely ends with it."""

from __future__ import annotations

import pytest

from localllm.errors import LocalLLMError, ModelNotFoundError
from localllm.hub.client import Hub
from localllm.hub.pull import plan
from localllm.models import store
from localllm.models.resolve import resolve

REPO = "someone/tiny-GGUF"


@pytest.fixture
def tiny_installed(isolated_home):
    """``tiny-model-Q4_K_M.gguf`` of REPO installed (its bytes do not matter to a reference)."""
    relative = f"{store.model_dir_name(REPO)}/tiny-model-Q4_K_M.gguf"
    path = isolated_home / "models" / relative
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF")
    model = store.InstalledModel(name=REPO, quant="Q4_K_M", files=[relative], size=4, source="hf", repo=REPO)
    store.record(model)
    return model


def test_the_installed_file_of_that_name_is_found_in_any_folder_of_the_repo(tiny_installed):
    for reference in (f"{REPO}/tiny-model-Q4_K_M.gguf", f"{REPO}/sub/dir/tiny-model-Q4_K_M.gguf"):
        assert resolve(reference).installed.key == tiny_installed.key
        assert plan(reference, Hub(offline=True)).installed.key == tiny_installed.key


def test_a_file_whose_name_is_the_end_of_an_installed_one_is_not_installed(tiny_installed):
    """model-Q4_K_M.gguf is another file of the repo than tiny-model-Q4_K_M.gguf."""
    reference = f"{REPO}/model-Q4_K_M.gguf"
    with pytest.raises(ModelNotFoundError, match="is not installed"):
        resolve(reference)
    with pytest.raises(LocalLLMError, match="offline"):  # pull would fetch it, not call it installed
        plan(reference, Hub(offline=True))
