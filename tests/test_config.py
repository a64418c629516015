import pytest

from llmcf.config import ConfigError, load_config


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert cfg.model.embed_dim == 32 and cfg.model.mlp == [200, 80]
    assert cfg.train.batch_size == 128 and cfg.train.patience == 2
    assert cfg.retrieval.k == 4 and cfg.retrieval.leakage == "same_or_later"
    assert cfg.ict.layers == 2 and cfg.ict.dim == 32 and cfg.ict.recon_weight == 1.0


def test_overrides_are_typed_and_nested(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.5\nmodel:\n  params: {num_layers: 3}\n")
    cfg = load_config(p, ["train.seeds=3", "model.params.heads=4", "data.split_ratio=[0.7, 0.2, 0.1]"])
    assert cfg.train.lr == 0.5 and cfg.train.seeds == 3
    assert cfg.model.params == {"num_layers": 3, "heads": 4}
    assert cfg.data.split_ratio == [0.7, 0.2, 0.1]
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float field takes it as the number it spells, in a file too
    p.write_text("train:\n  lr: 1e-3\n")
    assert load_config(p, ["recgen.lr=3E-4"]).train.lr == 0.001
    assert load_config(None, ["recgen.lr=3E-4"]).recgen.lr == 3e-4


@pytest.mark.parametrize("override, fragment", [
    ("train.nope=1", "unknown field 'nope'"),
    ("train.seeds=abc", "train.seeds: expected an integer"),
    ("ict.enabled=3", "ict.enabled: expected true/false"),
    ("train.lr=fast", "train.lr: expected a number"),
    ("train.lr=nan", "train.lr: expected a number"),
    ("seeds", "expected section.field=value"),
])
def test_bad_overrides_name_the_field(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, [override])


def test_shipped_presets_load():
    for name in ("demo", "ml-100k", "amazon-beauty"):
        cfg = load_config(name)
        assert cfg.models
    with pytest.raises(ConfigError, match="no shipped preset"):
        load_config("no-such-preset")


def test_section_hash_changes_only_with_its_sections():
    a = load_config()
    b = load_config(None, ["cot.count=10"])
    assert a.section_hash("data") == b.section_hash("data")
    assert a.section_hash("cot") != b.section_hash("cot")
