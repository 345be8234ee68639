import pytest
import yaml

from flows.config import ConfigError, PipelineConfig, load_config, preset_names, save_config


def test_presets_load_and_differ():
    assert {"sample", "enwiki"} <= set(preset_names())
    sample, enwiki = load_config("sample"), load_config("enwiki")
    assert sample.download.mirror.startswith("file://") and sample.download.mirror.endswith("/sample/mirror")
    assert enwiki.download.mirror == "https://dumps.wikimedia.org"
    assert enwiki.ingest.pages_per_part > sample.ingest.pages_per_part


def test_overrides_keep_types_and_reject_unknown_keys():
    cfg = load_config("sample", ["ingest.workers=3", "download.date=20260301", "progress=false"])
    assert cfg.ingest.workers == 3 and cfg.download.date == "20260301" and cfg.progress is False
    with pytest.raises(ConfigError, match="ingest.wrkers|wrkers"):
        load_config("sample", ["ingest.wrkers=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("sample", ["ingest.workers"])
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("nope")


def test_yaml_file_on_top_of_its_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"preset": "enwiki", "ingest": {"workers": 7}}))
    cfg = load_config(str(path), ["ingest.pages_per_part=5"])
    assert cfg.preset == "enwiki" and cfg.download.mirror == "https://dumps.wikimedia.org"
    assert cfg.ingest.workers == 7 and cfg.ingest.pages_per_part == 5


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("sample", ["ingest.workers=1"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(str(tmp_path / "run" / "config.yaml"))
    assert again == cfg


def test_every_field_is_described():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)

    walk(PipelineConfig)


def test_encoder_and_backbone_must_share_a_tokenizer(tiny_roberta, tmp_path):
    """`instances` hold the SI encoder's token ids and the backbone trains on them."""
    mismatch = [f"pretrain.model.backbone={tiny_roberta}"]
    with pytest.raises(
        ConfigError,
        match=r"select\.si\.encoder='minilm' and pretrain\.model\.backbone=.*"
        r"do not share a tokenizer",
    ):
        load_config("sample", mismatch)
    both = load_config("sample", [f"select.si.encoder={tiny_roberta}", *mismatch])
    assert both.select.si.encoder == both.pretrain.model.backbone == str(tiny_roberta)
    # another folder saved with the same tokenizer (an export, a fine-tuned copy) is the same tokenizer
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_roberta).save_pretrained(tmp_path / "export")
    load_config(
        "sample", [f"select.si.encoder={tiny_roberta}", f"pretrain.model.backbone={tmp_path / 'export'}"]
    )
    with pytest.raises(ConfigError, match="not in the local cache"):
        load_config("sample", ["pretrain.model.backbone=FacebookAI/roberta-base"])
    assert load_config("enwiki").select.si.encoder == load_config("enwiki").pretrain.model.backbone
