"""The model catalog: architecture numbers checked against the published sizes and the bundled config."""

from __future__ import annotations

import json

import pytest
from tunewiz.core.models import catalog
from tunewiz.core.models.catalog import BY_KEY, MODELS, CatalogError


@pytest.mark.parametrize("spec", MODELS, ids=lambda m: m.key)
def test_parameter_count_from_the_architecture_matches_the_published_size(spec):
    # A wrong width, layer count or vocabulary moves the count by far more than 2%.
    assert spec.params == pytest.approx(spec.published_params, rel=0.02)


def test_the_catalog_covers_the_models_people_fine_tune():
    ids = {m.hub_id for m in MODELS}
    for needed in (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "HuggingFaceTB/SmolLM2-360M-Instruct",
        "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "Qwen/Qwen2.5-1.5B-Instruct",
        "Qwen/Qwen2.5-3B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
        "Qwen/Qwen3-0.6B",
        "Qwen/Qwen3-1.7B",
        "meta-llama/Llama-3.2-1B-Instruct",
        "meta-llama/Llama-3.2-3B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "microsoft/Phi-3.5-mini-instruct",
        "google/gemma-2-2b-it",
        "google/gemma-2-9b-it",
    ):
        assert needed in ids
    assert all(m.license for m in MODELS)


def test_bundled_entry_matches_the_converted_config_exactly(bundled_dir):
    cfg = json.loads((bundled_dir / "config.json").read_text())
    entry = catalog.find("bundled:smollm2-135m-instruct")
    assert entry is BY_KEY["smollm2-135m"]
    assert (entry.hidden, entry.layers, entry.heads, entry.kv_heads, entry.intermediate, entry.vocab) == (
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["intermediate_size"],
        cfg["vocab_size"],
    )
    assert entry.tied == cfg["tie_word_embeddings"] and entry.hd == cfg["head_dim"]
    assert catalog.from_dir(bundled_dir).params == entry.params


def test_models_are_found_by_key_hub_id_and_short_name():
    assert catalog.find("qwen2.5-7b").hub_id == "Qwen/Qwen2.5-7B-Instruct"
    assert catalog.find("meta-llama/llama-3.1-8b-instruct").key == "llama3.1-8b"
    assert catalog.find("gemma-2-2b-it").key == "gemma2-2b"
    assert catalog.find("no-such-model") is None


def test_unknown_model_error_lists_the_catalog(tmp_path):
    with pytest.raises(CatalogError) as err:
        catalog.lookup(str(tmp_path / "missing"))
    assert "qwen2.5-1.5b" in str(err.value) and "config.json" in str(err.value)


def test_model_outside_the_catalog_is_described_from_its_config(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "hidden_size": 896,
                "num_hidden_layers": 24,
                "num_attention_heads": 14,
                "num_key_value_heads": 2,
                "intermediate_size": 4864,
                "vocab_size": 151936,
                "tie_word_embeddings": True,
            }
        )
    )
    spec = catalog.lookup(str(tmp_path))
    assert spec.params == BY_KEY["qwen2.5-0.5b"].params  # the same architecture, bias included


def test_config_problems_are_all_reported_with_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "odd", "hidden_size": 64}))
    with pytest.raises(CatalogError) as err:
        catalog.from_dir(tmp_path)
    msg = str(err.value)
    assert "config.json" in msg
    assert all(k in msg for k in ("num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"))
    (tmp_path / "config.json").write_text('{"hidden_size": 64,\n oops}')
    with pytest.raises(CatalogError, match=r"config.json:2"):
        catalog.from_dir(tmp_path)
