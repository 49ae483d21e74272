import json

import pytest
import torch

from utils.checkpoints import (
    REPO_ROOT,
    CheckpointError,
    _restore_hint,
    artifact_path,
    load_checkpoint,
    read_manifest,
    register_artifact,
    save_checkpoint,
    verify_all,
)


def _save(tmp_path, name="net", value=1.0):
    state = {"w": torch.full((3,), value)}
    return save_checkpoint(state, name, {"d": 3}, "python make_net.py", {"acc": 0.9}, data_dir=tmp_path)


def test_roundtrip_and_manifest(tmp_path):
    entry = _save(tmp_path)
    state, got = load_checkpoint("net", data_dir=tmp_path)
    assert torch.equal(state["w"], torch.ones(3))
    assert got["sha256"] == entry["sha256"] and got["command"] == "python make_net.py"
    assert got["metrics"] == {"acc": 0.9} and got["config"] == {"d": 3}
    assert json.loads((tmp_path / "manifest.json").read_text())["artifacts"]["net"]["file"] == "net.pt"
    assert verify_all(tmp_path) == []


def test_corrupted_file_gives_one_line_error(tmp_path):
    _save(tmp_path)
    p = tmp_path / "net.pt"
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint("net", data_dir=tmp_path)
    msg = str(e.value)
    assert "corrupted" in msg and "python make_net.py" in msg and "\n" not in msg
    assert len(verify_all(tmp_path)) == 1


def test_missing_and_unknown(tmp_path):
    _save(tmp_path)
    (tmp_path / "net.pt").unlink()
    with pytest.raises(CheckpointError, match="missing: regenerate it with `python make_net.py`"):
        artifact_path("net", tmp_path)
    with pytest.raises(CheckpointError, match="no artifact named 'other'"):
        artifact_path("other", tmp_path)


def test_corrupted_manifest(tmp_path):
    _save(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_failed_save_keeps_previous_artifact(tmp_path):
    _save(tmp_path, value=1.0)
    before = (tmp_path / "net.pt").read_bytes()
    with pytest.raises(CheckpointError):
        save_checkpoint(["not", "a", "dict"], "net", {}, "cmd", {}, data_dir=tmp_path)
    assert (tmp_path / "net.pt").read_bytes() == before
    assert load_checkpoint("net", tmp_path)[0]["w"].sum() == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_register_needs_command_and_file(tmp_path):
    (tmp_path / "tok.json").write_text("{}")
    with pytest.raises(CheckpointError, match="command"):
        register_artifact(tmp_path / "tok.json", "tok", {}, "", {}, data_dir=tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        register_artifact(tmp_path / "nope.json", "nope", {}, "cmd", {}, data_dir=tmp_path)
    register_artifact(tmp_path / "tok.json", "tok", {}, "cmd", {}, data_dir=tmp_path)
    assert artifact_path("tok", tmp_path).name == "tok.json"


def test_shipped_artifacts_verify():
    """Every artifact the repository ships matches its manifest."""
    assert verify_all() == []


def test_save_with_unreadable_manifest_changes_nothing(tmp_path):
    _save(tmp_path, value=1.0)
    before = (tmp_path / "net.pt").read_bytes()
    (tmp_path / "manifest.json").write_text('{"artifacts": {"net": ')  # truncated
    broken = (tmp_path / "manifest.json").read_bytes()
    with pytest.raises(CheckpointError, match="not valid JSON"):
        save_checkpoint({"w": torch.zeros(3)}, "net", {}, "cmd", {}, data_dir=tmp_path)
    assert (tmp_path / "net.pt").read_bytes() == before          # the old weights are still there
    assert (tmp_path / "manifest.json").read_bytes() == broken   # and the manifest is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_save_with_unserialisable_config_changes_nothing(tmp_path):
    _save(tmp_path, value=1.0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CheckpointError, match="nothing was written"):
        save_checkpoint({"w": torch.zeros(3)}, "net", {"bad": object()}, "cmd", {}, data_dir=tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_missing_or_empty_manifest_is_an_error_for_loading(tmp_path):
    with pytest.raises(CheckpointError, match="manifest.json is missing"):
        artifact_path("net", tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(CheckpointError, match="lists no artifacts"):
        verify_all(tmp_path)


def test_restore_hint_works_from_any_directory():
    hint = _restore_hint(REPO_ROOT / "data" / "manifest.json")
    assert f"git -C {REPO_ROOT} checkout -- data/manifest.json" in hint


# ---------------------------------------------------------------- licences
def _entries(manifest: dict):
    """(section, name, entry) of every entry in every section of a manifest."""
    for section, entries in manifest.items():
        assert isinstance(entries, dict), f"manifest section {section!r} is not a mapping of entries"
        for name, entry in entries.items():
            yield section, name, entry


def test_every_manifest_entry_states_its_licence():
    from utils.checkpoints import ARTIFACT_LICENCE

    manifest = json.loads((REPO_ROOT / "data" / "manifest.json").read_text())
    missing = [f"{s}/{n}" for s, n, e in _entries(manifest) if not str(e.get("licence", "")).strip()]
    assert not missing, f"manifest entries without a licence field (the course's own: {ARTIFACT_LICENCE!r}; a " \
                        f"released model: its card's licence, or 'none stated'): {missing}"
    # the course's own artifacts carry the course's licence
    assert {e["licence"] for e in manifest["artifacts"].values()} == {ARTIFACT_LICENCE}


def test_released_models_are_listed_with_the_loaders_licences():
    from utils.lm import api

    released = json.loads((REPO_ROOT / "data" / "manifest.json").read_text())["released"]
    assert {k: released.get(k) for k in api.RELEASED} == api.RELEASED  # the manifest repeats the LM loaders' table
    names = set(api.HUB_MODELS) | {info["sae_release"] for info in api.HUB_MODELS.values()}
    assert names <= set(released), f"released models the loaders use but the manifest lacks: {names - set(released)}"
    for name, entry in released.items():
        assert entry["source"].startswith("https://") and entry["licence"], name
    for name in api.RELEASED:   # the licence is also in the docstring of the module that loads it
        assert released[name]["licence"].split(" (")[0].replace("CC-BY-4.0", "CC BY 4.0") in api.__doc__, name


def test_released_rl_agents_are_listed_with_their_licence():
    """Every released RL agent a loader downloads (the loaders beside utils.lm.fixtures.AGENT_FIXTURES'
    writers) is in the manifest's "released" section, and its loader's docstring states the licence."""
    import importlib

    from utils.lm.fixtures import AGENT_FIXTURES

    released = json.loads((REPO_ROOT / "data" / "manifest.json").read_text())["released"]
    for module, _writer in AGENT_FIXTURES:
        mod = importlib.import_module(module)
        repos = list(mod.REPOS.values()) if hasattr(mod, "REPOS") else [mod.HUB_REPO]
        for repo in repos:
            assert repo in released, f"{module} downloads {repo}: list it in data/manifest.json 'released' with its licence"
            licence = released[repo]["licence"]
            assert licence and " ".join(licence.split()) in " ".join(mod.__doc__.split()), \
                f"{module}'s docstring does not state {repo}'s licence ({licence!r})"


def test_a_new_artifact_gets_the_course_licence(tmp_path):
    from utils.checkpoints import ARTIFACT_LICENCE

    assert _save(tmp_path)["licence"] == ARTIFACT_LICENCE
    (tmp_path / "extra.bin").write_bytes(b"x")
    assert register_artifact(tmp_path / "extra.bin", "extra", {}, "make extra", {}, data_dir=tmp_path)["licence"] \
        == ARTIFACT_LICENCE
