"""The store's writer and its queries, as `list`, `run -m`, `rm` and `pull` see them: what is
recorded, what is found, what is deleted, what a damaged or foreign entry becomes (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localllm import paths
from localllm.models import store


def model(
    name: str,
    quant: str | None = "Q4_K_M",
    *,
    files: list[str] | None = None,
    installed_at: float = 1.0,
    last_used: float | None = None,
    **kw,
) -> store.InstalledModel:
    folder = store.model_dir_name(name)
    return store.InstalledModel(
        name=name,
        quant=quant,
        files=files or [f"{folder}/{folder}-{quant}.gguf"],
        installed_at=installed_at,
        last_used=last_used,
        **kw,
    )


def put(m: store.InstalledModel, data: bytes = b"GGUF") -> store.InstalledModel:
    for path in m.paths():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    store.record(m)
    return m


def manifest_json(home: Path) -> dict:
    return json.loads((home / "manifest.json").read_text("utf-8"))


# -- names and paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("smollm2", "smollm2"),
        ("owner/Repo-1.5B_x+y", "owner--Repo-1.5B_x+y"),
        ("a" * 200, "a" * 200),
        ("9lives", "9lives"),
        ("_x", "_x"),
        ("console", "console"),
        ("com10", "com10"),
    ],
)
def test_a_model_name_gives_one_folder(name, folder):
    assert store.model_dir_name(name) == folder


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a/b/c",
        ".hidden",
        "a/.b",
        "a b",
        "a" * 201,
        "o/" + "a" * 198,
        "con",
        "NUL.x",
        "lpt9",
        "com0",
        "a\\b",
        None,
    ],
)
def test_a_name_that_is_not_one_ordinary_folder_is_refused(name):
    with pytest.raises(store.UnsafePathError) as err:
        store.model_dir_name(name)
    assert "is not a usable model name" in str(err.value) and err.value.hint


@pytest.mark.parametrize("name", ["m.gguf", "x" * 200, "é.gguf", "a..b", ".hidden.gguf"])
def test_ordinary_file_names_are_kept(name):
    assert store.check_file_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "a\\b", "c:d", "a\x00", "a\x1f", "a\x7f", "a\x85", "x" * 201, "é" * 101, 7]
)
def test_file_names_that_could_leave_the_folder_are_refused(name):
    with pytest.raises(store.UnsafePathError, match="is not a usable file name in the store"):
        store.check_file_name(name)


@pytest.mark.parametrize("relative", ["m/f.gguf", "o--r/x.gguf"])
def test_a_relative_path_of_a_folder_and_a_file_is_accepted(relative, isolated_home):
    assert store.check_relative(relative) == relative
    assert store.file_path(relative) == paths.models_dir() / relative


@pytest.mark.parametrize(
    "relative",
    ["f.gguf", "a/b/c.gguf", ".partial/x.part", "../x", "/etc/x", "a/..", "./x", "c:/x.gguf", "a\x01/f.gguf", None],
)
def test_a_relative_path_out_of_one_folder_is_refused(relative):
    with pytest.raises(store.UnsafePathError, match="is not a path inside the models directory"):
        store.check_relative(relative)


def test_a_symlinked_folder_is_refused_by_name(isolated_home, tmp_path):
    base = paths.models_dir()
    base.mkdir(parents=True)
    (base / "m").symlink_to(tmp_path)
    with pytest.raises(store.UnsafePathError) as err:
        store.file_path("m/f.gguf")
    assert str(err.value) == f"{base / 'm'} is a symbolic link: the store does not follow it out of {base}"
    assert store.file_path("m/f.gguf", tmp_path / "other") == tmp_path / "other" / "m" / "f.gguf"


# -- recording and reading -------------------------------------------------------------------------


def test_a_recorded_model_reads_back_with_every_field(isolated_home):
    m = model(
        "owner/repo",
        "Q8_0",
        sha256="ab" * 32,
        size=123,
        source="hf:owner/repo@rev",
        last_used=5.5,
        sha256s=["ab" * 32],
        repo="owner/repo",
        revision="rev",
        link="hardlink",
    )
    store.record(m)
    [back] = store.load_manifest()
    assert back == m and back.key == "owner/repo:Q8_0"
    raw = manifest_json(isolated_home)["models"][0]
    assert raw["files"] == ["owner--repo/owner--repo-Q8_0.gguf"] and "extra" not in raw


def test_recording_the_same_name_and_quant_replaces_and_others_stay(isolated_home):
    store.record(model("a", installed_at=1.0))
    store.record(model("a", "Q8_0"))
    store.record(model("b"))
    store.record(model("a", installed_at=2.0))
    entries = store.load_manifest()
    assert [(m.name, m.quant, m.installed_at) for m in entries] == [
        ("a", "Q8_0", 1.0),
        ("b", "Q4_K_M", 1.0),
        ("a", "Q4_K_M", 2.0),
    ]
    assert model("x", None).key == "x"


def test_recording_a_path_out_of_the_store_writes_nothing(isolated_home):
    with pytest.raises(store.UnsafePathError):
        store.record(model("a", files=["../../victim.gguf"]))
    assert not (isolated_home / "manifest.json").exists()


def test_a_manifest_that_cannot_be_replaced_is_one_error_naming_it(isolated_home):
    store.record(model("a"))
    from localllm import fs

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fs, "atomic_write", full)
        with pytest.raises(store.StoreError) as err:
            store.record(model("b"))
    assert str(err.value) == f"cannot write {isolated_home / 'manifest.json'}: No space left on device"
    assert err.value.hint == "free some disk space, or make the data directory writable"
    assert [m.name for m in store.load_manifest()] == ["a"]


def test_a_manifest_that_cannot_be_read_is_one_error(isolated_home):
    (isolated_home).mkdir(parents=True, exist_ok=True)
    (isolated_home / "manifest.json").mkdir()
    with pytest.raises(store.StoreError) as err:
        store.read_manifest()
    assert str(err.value) == f"cannot read {isolated_home / 'manifest.json'}: Is a directory"
    assert err.value.hint == "check the data directory's permissions"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ('{"models": {}}', "not a manifest: expected an object with a list of models"),
        ("[]", "not a manifest"),
        ("{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_a_damaged_manifest_names_why(isolated_home, raw, why):
    isolated_home.mkdir(parents=True, exist_ok=True)
    path = isolated_home / "manifest.json"
    path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    with pytest.raises(store.StoreError) as err:
        store.read_manifest()
    assert str(err.value).startswith(f"{path} is damaged (") and why in str(err.value)
    if why.startswith("not a manifest"):
        assert str(err.value) == f"{path} is damaged (not a manifest: expected an object with a list of models)"
    assert err.value.hint == "move it aside and import or pull again; the model files stay on disk"


def test_a_manifest_that_is_not_json_is_named_with_the_parser_s_words_cut_to_one_line(isolated_home):
    isolated_home.mkdir(parents=True, exist_ok=True)
    path = isolated_home / "manifest.json"
    data = b'{"models": [' + b" " * 100_000 + b"\xc3("  # a bad UTF-8 sequence far in: a long message
    path.write_bytes(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        words = str(exc)
    assert len(words) > 80
    with pytest.raises(store.StoreError) as err:
        store.read_manifest()
    assert str(err.value) == f"{path} is damaged (not JSON: {words[:80]})"


def test_a_manifest_without_models_is_empty(isolated_home):
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "manifest.json").write_text('{"version": 1, "note": "x"}')
    manifest = store.read_manifest()
    assert manifest.models == [] and manifest.bad == [] and manifest.extra == {"note": "x"}


GOOD = {"name": "m", "quant": "Q4_K_M", "files": ["m/m.gguf"]}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"name": None}, "no 'name'"),
        ({"quant": None}, "no 'quant'"),
        ({"files": None}, "no 'files'"),
        ({"name": ""}, "'name' is not a name"),
        ({"name": 3}, "'name' is not a name"),
        ({"name": "a\x00b"}, "'name' is not a name"),
        ({"quant": 4}, "'quant' is not a string or null"),
        ({"files": []}, "'files' is not a list of paths"),
        ({"files": "m/m.gguf"}, "'files' is not a list of paths"),
        ({"sha256": 5}, "'sha256' is not a string or null"),
        ({"size": -1}, "'size' is not a byte count"),
        ({"size": True}, "'size' is not a byte count"),
        ({"size": 1.5}, "'size' is not a byte count"),
        ({"source": None}, "'source' is not a string"),
        ({"installed_at": "today"}, "'installed_at' is not a time"),
        ({"installed_at": float("nan")}, "'installed_at' is not a time"),
        ({"installed_at": float("inf")}, "'installed_at' is not a time"),
        ({"installed_at": -float("inf")}, "'installed_at' is not a time"),
        ({"installed_at": False}, "'installed_at' is not a time"),
        ({"last_used": "x"}, "'last_used' is not a time or null"),
        ({"sha256s": ["a", 1]}, "'sha256s' is not a list of strings"),
        ({"sha256s": "a"}, "'sha256s' is not a list"),
        ({"repo": 1}, "'repo' is not a string or null"),
        ({"revision": []}, "'revision' is not a string or null"),
        ({"link": "copy"}, '\'link\' is not "hardlink", "symlink" or null'),
    ],
)
def test_a_bad_field_makes_a_bad_entry_that_says_which(change, reason):
    item = dict(GOOD)
    for key, value in change.items():
        if value is None and key in ("name", "quant", "files"):
            del item[key]
        else:
            item[key] = value
    with pytest.raises(ValueError) as err:
        store.parse_entry(item)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    "change",
    [
        {"quant": None},
        {"sha256": None},
        {"size": 0},
        {"installed_at": 0},
        {"installed_at": 1.5},
        {"last_used": None},
        {"last_used": 2},
        {"link": None},
        {"link": "symlink"},
        {"sha256s": []},
        {"name": "owner/repo"},
    ],
)
def test_good_values_of_each_field_are_accepted(change):
    parsed = store.parse_entry({**GOOD, **change})
    for key, value in change.items():
        assert getattr(parsed, key) == value


def test_a_bad_entry_is_kept_as_it_was_with_its_reason(isolated_home):
    isolated_home.mkdir(parents=True, exist_ok=True)
    bad = [7, {"name": "x", "quant": "Q", "files": ["../x.gguf"]}, {"name": "y", "files": ["y/y.gguf"]}]
    (isolated_home / "manifest.json").write_text(json.dumps({"version": 1, "models": [GOOD, *bad]}))
    manifest = store.read_manifest()
    assert [m.name for m in manifest.models] == ["m"]
    assert [(b.raw, b.reason) for b in manifest.bad] == [
        (7, "not an object"),
        (bad[1], "'../x.gguf' is not a path inside the models directory"),
        (bad[2], "no 'quant'"),
    ]
    assert [b.key for b in manifest.bad] == ["?", "x:Q", "y"]
    store.record(model("n"))
    assert manifest_json(isolated_home)["models"][-3:] == bad  # written back unchanged, after the good ones


# -- queries ---------------------------------------------------------------------------------------


def test_installed_lists_only_models_whose_files_are_there(isolated_home):
    put(model("a"))
    put(model("b", files=["b/one.gguf", "b/two.gguf"]))
    store.record(model("gone"))
    (paths.models_dir() / "b" / "two.gguf").unlink()
    assert [m.name for m in store.installed()] == ["a"]
    assert {m.name for m in store.find_all("gone")} == {"gone"}  # find_all looks at the manifest only


def test_find_installed_ignores_case_and_picks_the_most_recently_used(isolated_home):
    put(model("Smol", "Q4_K_M", installed_at=5.0))
    put(model("smol", "Q8_0", installed_at=1.0, last_used=3.0))
    put(model("smol", "F16", installed_at=9.0))
    assert store.find_installed("SMOL").quant == "Q8_0"
    assert store.find_installed("smol", "q4_k_m").name == "Smol"
    assert store.find_installed("smol", "Q2_K") is None and store.find_installed("other") is None
    assert store.most_recent().quant == "Q8_0"


def test_without_any_use_the_newest_install_is_the_most_recent(isolated_home):
    assert store.most_recent() is None
    put(model("a", installed_at=2.0))
    put(model("b", installed_at=3.0))
    put(model("c", installed_at=1.0))
    assert store.most_recent().name == "b"
    assert store.find_installed("b").name == "b"


def test_a_quant_less_model_is_found_by_name_and_by_no_quant(isolated_home):
    put(model("plain", None))
    assert store.find_installed("plain").key == "plain"
    assert store.find_installed("plain", "Q4_K_M") is None
    assert [m.key for m in store.find_all("PLAIN")] == ["plain"]
    assert store.find_all("plain", "q4_k_m") == []


def test_find_all_filters_by_quant(isolated_home):
    store.record(model("m", "Q4_K_M"))
    store.record(model("m", "Q8_0"))
    store.record(model("n", "Q8_0"))
    assert [m.quant for m in store.find_all("M")] == ["Q4_K_M", "Q8_0"]
    assert [m.quant for m in store.find_all("m", "q8_0")] == ["Q8_0"]


def test_an_entry_in_a_symlinked_folder_is_unusable_not_installed(isolated_home, tmp_path):
    put(model("a"))
    put(model("l"))
    real = paths.models_dir() / "l"
    real.rename(tmp_path / "elsewhere")
    real.symlink_to(tmp_path / "elsewhere")
    assert [m.name for m in store.installed()] == ["a"]
    [bad] = store.unusable()
    assert bad.name == "l" and "is a symbolic link" in bad.reason


def test_touch_sets_last_used_of_that_model_only(isolated_home):
    put(model("a"))
    put(model("a", "Q8_0"))
    store.touch(model("a"))
    used = {m.key: m.last_used for m in store.load_manifest()}
    assert used["a:Q4_K_M"] is not None and used["a:Q8_0"] is None
    assert store.most_recent().key == "a:Q4_K_M"


# -- removing --------------------------------------------------------------------------------------


def test_remove_deletes_its_files_its_folder_and_its_entry(isolated_home):
    m = put(model("a", files=["a/one.gguf", "a/two.gguf"]))
    put(model("b"))
    deleted = store.remove(m)
    assert deleted == m.paths()
    assert not (paths.models_dir() / "a").exists()
    assert [x.name for x in store.load_manifest()] == ["b"]


def test_remove_keeps_a_file_another_entry_uses_and_the_folder_with_it(isolated_home):
    shared = "m/shared.gguf"
    a = put(model("m", "Q4_K_M", files=[shared, "m/a.gguf"]))
    put(model("m", "Q8_0", files=[shared]))
    assert store.remove(a) == [paths.models_dir() / "m" / "a.gguf"]
    assert (paths.models_dir() / shared).is_file()
    assert [x.key for x in store.load_manifest()] == ["m:Q8_0"]


def test_remove_of_files_already_gone_forgets_the_entry(isolated_home):
    m = model("a")
    store.record(m)
    assert store.remove(m) == []
    assert store.load_manifest() == []


def test_remove_keeps_a_folder_that_holds_other_files(isolated_home):
    m = put(model("a"))
    (paths.models_dir() / "a" / "notes.txt").write_text("mine")
    store.remove(m)
    assert sorted(p.name for p in (paths.models_dir() / "a").iterdir()) == ["notes.txt"]


def test_a_file_that_cannot_be_deleted_is_one_error_and_the_entry_stays(isolated_home):
    m = put(model("a"))
    target = m.path()
    real_unlink = Path.unlink

    def refuse(self, *args, **kwargs):
        if self == target:
            raise PermissionError(13, "Permission denied")
        return real_unlink(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "unlink", refuse)
        with pytest.raises(store.StoreError) as err:
            store.remove(m)
    assert str(err.value) == f"cannot delete {target}: Permission denied"
    assert [x.name for x in store.load_manifest()] == ["a"] and target.is_file()


def test_forget_bad_drops_only_the_bad_entries_of_that_name(isolated_home):
    isolated_home.mkdir(parents=True, exist_ok=True)
    bad = [
        {"name": "x", "quant": "Q8_0", "files": ["../x.gguf"]},
        {"name": "y", "files": []},
        {"name": "X", "quant": 5, "files": ["x/x.gguf"]},
    ]
    (isolated_home / "manifest.json").write_text(json.dumps({"models": [GOOD, *bad]}))
    assert store.forget_bad("x:q8_0") == 1
    assert store.forget_bad("nothing") == 0
    assert [b.raw for b in store.bad_entries()] == bad[1:]
    assert store.forget_bad("X") == 1
    assert [b.raw for b in store.bad_entries()] == [bad[1]]
    assert [m.name for m in store.load_manifest()] == ["m"]


# -- installing ------------------------------------------------------------------------------------


def test_install_file_moves_the_file_into_its_folder(isolated_home, tmp_path):
    tmp = tmp_path / "download.tmp"
    tmp.write_bytes(b"GGUF data")
    dest = store.install_file(tmp, "m/m.gguf")
    assert dest == paths.models_dir() / "m" / "m.gguf" and dest.read_bytes() == b"GGUF data"
    assert not tmp.exists()


def test_install_file_refuses_a_path_out_of_the_store(isolated_home, tmp_path):
    tmp = tmp_path / "download.tmp"
    tmp.write_bytes(b"x")
    with pytest.raises(store.UnsafePathError):
        store.install_file(tmp, "../evil.gguf")
    assert tmp.exists()


def test_check_writable_passes_on_a_fresh_home_and_leaves_nothing(isolated_home):
    store.check_writable()
    assert [p.name for p in isolated_home.iterdir()] == []
    paths.models_dir().mkdir(parents=True)
    store.check_writable()
    assert list(paths.models_dir().iterdir()) == []


def test_check_writable_names_the_folder_it_cannot_write(isolated_home, monkeypatch):
    from localllm import fs

    def read_only(path):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(fs, "temp_beside", read_only)
    with pytest.raises(store.StoreError) as err:
        store.check_writable()
    assert str(err.value) == f"cannot write to {isolated_home}: Read-only file system"
    assert err.value.hint == "make the data directory writable, or set LOCALLLM_HOME to a folder you own"
    paths.models_dir().mkdir(parents=True)
    with pytest.raises(store.StoreError, match=f"cannot write to {paths.models_dir()}:"):
        store.check_writable()


def test_partials_live_in_a_hidden_folder_of_the_store(isolated_home):
    assert store.partial_dir() == paths.models_dir() / ".partial"


def test_as_json_puts_unknown_fields_first_and_known_ones_win():
    m = store.parse_entry({**GOOD, "future": 1, "size": 5})
    m.extra["size"] = 99  # a newer release's field must never override a known one
    data = m.as_json()
    assert data["future"] == 1 and data["size"] == 5 and list(data)[0] == "future"
