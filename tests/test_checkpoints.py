"""Checkpoints: every layout (SPEC §3) loads to identical logits; mismatches and bad files are readable."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import dass
from dass import checkpoints as ckpt
from dass.cli import main as cli_main
from dass.errors import CheckpointError, ConfigError

torch.set_num_threads(1)

LABELS = ["Speech", "Dog", "Music", "Rain, storm", "Engine"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = dass.create_model("dass_tiny", num_classes=5, labels=LABELS).eval()
    with torch.no_grad():  # move the SSM parameters off their init values so that mix-ups show
        for name, p in m.named_parameters():
            if name.endswith(("A_logs", "Ds", "dt_projs_bias")):
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def features():
    torch.manual_seed(1)
    return torch.randn(2, 64, 128)


@pytest.fixture(scope="module")
def logits(model, features):
    with torch.no_grad():
        return model(features)


def logits_of(m, features):
    with torch.no_grad():
        return m(features)


# ---------------------------------------------------------------------------- layouts built here


def authors_layout(state: dict) -> dict:
    """SPEC §3a: the authors' DataParallel state dict."""
    return {"module.v." + k: v.clone() for k, v in state.items()}


def hf_layout(state: dict) -> dict:
    """SPEC §3b: the Hugging Face release's keys and shapes, written independently of dass.checkpoints."""
    stem = {"0": "0", "2": "1", "5": "3", "7": "4"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "patch_embed":
            new = "dass.patch_embeddings.projection." + stem[parts[1]] + "." + parts[2]
        elif parts[0] == "classifier":
            new = ("head." if parts[1] == "head" else "dass.norm.") + parts[2]
        elif parts[-1] == "x_proj_weight":  # (4, R+2N, C) -> (4(R+2N), C)
            new, value = "dass." + ".".join(parts[:-1]) + ".x_proj.weight", value.flatten(0, 1)
        elif parts[-1] == "dt_projs_weight":  # (4, C, R) -> (4C, R)
            new, value = "dass." + ".".join(parts[:-1]) + ".dt_projs.weight", value.flatten(0, 1)
        elif "downsample" in parts:
            parts[3] = {"1": "down", "3": "norm"}[parts[3]]
            new = "dass." + ".".join(parts)
        else:
            new = "dass." + key
        out[new] = value.clone()
    return out


def hf_config(model) -> dict:
    """A config.json as the Hugging Face release writes it."""
    c = model.config
    return {
        "architectures": ["DASSForAudioClassification"],
        "auto_map": {"AutoConfig": "configuration_dass.DASSConfig"},
        "model_type": "dass", "patch_size": 4, "embed_dim": c.dims[0], "depths": list(c.depths),
        "dims": list(c.dims), "drop_path_rate": 0.2, "num_classes": c.num_classes, "max_length": 1024,
        "num_mel_bins": 128, "use_checkpoint": False, "torch_dtype": "float32",
        "id2label": {str(i): name for i, name in enumerate(c.labels)},
        "label2id": {name: str(i) for i, name in enumerate(c.labels)},
    }


def test_authors_pth_layout(tmp_path, model, features, logits) -> None:
    path = tmp_path / "DASS_tiny.pth"
    torch.save(authors_layout(model.state_dict()), path)
    assert ckpt.detect_layout(torch.load(path, weights_only=True)) == "authors"
    loaded = dass.from_pretrained(path)
    assert loaded.config.depths == (1, 1, 2, 1) and loaded.config.dims == (48, 96, 192, 384)
    assert loaded.config.num_classes == 5 and loaded.config.labels is None
    assert not loaded.training
    assert torch.equal(logits_of(loaded, features), logits)


@pytest.mark.parametrize("weights_name", ["model.safetensors", "pytorch_model.bin"])
def test_hugging_face_folder_layout(tmp_path, model, features, logits, weights_name) -> None:
    state = hf_layout(model.state_dict())
    assert state["dass.layers.2.blocks.1.op.x_proj.weight"].shape == (4 * (12 + 2), 192)
    assert state["dass.layers.2.blocks.1.op.dt_projs.weight"].shape == (4 * 192, 12)
    if weights_name.endswith(".safetensors"):
        save_file(state, str(tmp_path / weights_name))
    else:
        torch.save(state, tmp_path / weights_name)
    (tmp_path / "config.json").write_text(json.dumps(hf_config(model)))
    loaded = dass.from_pretrained(tmp_path)
    assert loaded.config.labels == LABELS
    assert torch.equal(logits_of(loaded, features), logits)
    # our converters agree with the renaming above, both ways
    ours = model.state_dict()
    to_hf = ckpt.state_dict_to_hf_dass(ours)
    assert to_hf.keys() == state.keys() and all(torch.equal(to_hf[k], state[k]) for k in state)
    back = ckpt.state_dict_from_hf_dass(state)
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)


def test_hf_config_conversion() -> None:
    cfg = {"model_type": "dass", "depths": [2, 2, 8, 2], "dims": 96, "num_classes": 3,
           "id2label": {"2": "c", "0": "a", "1": "b"}}
    config = ckpt.dass_config_from_hf(cfg)
    assert config.dims == (96, 192, 384, 768) and config.labels == ["a", "b", "c"]
    placeholder = {**cfg, "id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}}
    assert ckpt.dass_config_from_hf(placeholder).labels is None
    with pytest.raises(ConfigError, match="patch_size 8 is not supported"):
        ckpt.dass_config_from_hf({**cfg, "patch_size": 8})
    with pytest.raises(ConfigError, match="model_type is 'ast', expected 'dass'"):
        ckpt.dass_config_from_hf({**cfg, "model_type": "ast"})
    back = ckpt.dass_config_from_hf(ckpt.dass_config_to_hf(config))
    assert back == config
    config.pooling = "first"
    with pytest.raises(ConfigError, match="cannot express pooling='first'"):
        ckpt.dass_config_to_hf(config)


# ------------------------------------------------------------------------------------ mismatches


def test_wrong_shaped_checkpoint_lists_every_bad_key(tmp_path, model) -> None:
    state = authors_layout(model.state_dict())
    state["module.v.layers.1.blocks.0.op.Ds"] = torch.zeros(10)
    del state["module.v.classifier.norm.bias"]
    state["module.v.layers.0.blocks.0.op.extra_bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pth")
    message = (
        r"bad\.pth does not fit the dass model:\n"
        r"  missing keys \(1\):\n    module\.v\.classifier\.norm\.bias\n"
        r"  unexpected keys \(1\):\n    module\.v\.layers\.0\.blocks\.0\.op\.extra_bias\n"
        r"  mis-shaped keys \(1\):\n    module\.v\.layers\.1\.blocks\.0\.op\.Ds: checkpoint \(10,\) vs model \(384,\)"
    )
    with pytest.raises(CheckpointError, match=message):
        dass.from_pretrained(tmp_path / "bad.pth")


def test_wrong_shaped_hf_checkpoint_uses_hf_names(tmp_path, model) -> None:
    state = hf_layout(model.state_dict())
    state["head.weight"] = torch.zeros(5, 100)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(hf_config(model)))
    message = r"mis-shaped keys \(1\):\n    head\.weight: checkpoint \(5, 100\) vs model \(5, 384\)"
    with pytest.raises(CheckpointError, match=message):
        dass.from_pretrained(tmp_path)


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint file not found: .*missing.pth"):
        ckpt.load_state_dict_file(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"this is not a pickle")
    unreadable = r"cannot read checkpoint with torch\.load\(weights_only=True\)"
    with pytest.raises(CheckpointError, match=r"junk\.pth: " + unreadable):
        ckpt.load_state_dict_file(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors: not a readable safetensors file"):
        ckpt.load_state_dict_file(tmp_path / "junk.safetensors")
    torch.save({"note": "no tensors here"}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match=r"empty\.pth: the checkpoint holds no tensors"):
        ckpt.load_state_dict_file(tmp_path / "empty.pth")
    # arbitrary pickled objects are refused (weights_only=True)
    torch.save({"w": torch.zeros(1), "obj": ConfigError("x")}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match=r"pickle\.pth: " + unreadable):
        ckpt.load_state_dict_file(tmp_path / "pickle.pth")
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointError, match=r"folder: no weights found \(expected model\.safetensors or "
                                              r"pytorch_model\.bin"):
        dass.from_pretrained(tmp_path / "folder")
    with pytest.raises(CheckpointError, match="no such checkpoint file or folder: .*nothing.pth"):
        dass.from_pretrained(tmp_path / "nothing.pth")


def test_hub_id_offline_says_how_to_pass_a_local_path(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"cannot fetch 'dass-tests/not-a-real-model' from the Hugging Face "
                                              r"Hub .*pass that local folder instead of the hub id"):
        dass.from_pretrained("dass-tests/not-a-real-model")


# -------------------------------------------------------------------------------- our own format


def test_save_load_round_trip_and_overrides(tmp_path, model, features, logits) -> None:
    ckpt.save_pretrained(model, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "dass" and config["labels"] == LABELS and config["depths"] == [1, 1, 2, 1]
    loaded = dass.from_pretrained(tmp_path / "out")
    assert loaded.config == model.config
    assert torch.equal(logits_of(loaded, features), logits)

    summed = dass.from_pretrained(tmp_path / "out", pooling="sum")
    assert summed.config.pooling == "sum"
    with torch.no_grad():
        want = summed.classifier.head(model.forward_features(features).sum((2, 3)))
        torch.testing.assert_close(summed(features), want)

    retarget = dass.from_pretrained(tmp_path / "out", num_classes=3)  # fresh head for fine-tuning
    assert retarget.config.num_classes == 3 and retarget.config.labels is None
    assert retarget.classifier.head.weight.shape == (3, 384)
    assert torch.equal(retarget.layers[2].blocks[1].op.A_logs, model.layers[2].blocks[1].op.A_logs)

    with pytest.raises(CheckpointError, match=r"unknown config key\(s\) 'colour'"):
        dass.from_pretrained(tmp_path / "out", colour="blue")
    config["depths"] = [1, 1, 1, 1]
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    message = (r"model\.safetensors does not fit the dass model:\n  unexpected keys \(18\):\n"
               r"    layers\.2\.blocks\.1\.mlp\.fc1\.bias\n(.|\n)*\.\.\. and 6 more$")
    with pytest.raises(CheckpointError, match=message):
        dass.from_pretrained(tmp_path / "out")


def test_official_ast_checkpoint_is_converted(tmp_path) -> None:
    from dass.models.ast import AST, ASTConfig

    torch.manual_seed(0)
    ast = AST(ASTConfig(embed_dim=64, depth=1, num_heads=1, num_classes=4)).eval()
    official = {("module." + k) if k.startswith("mlp_head.") else "module.v." + k: v
                for k, v in ast.state_dict().items()}
    torch.save(official, tmp_path / "audioset_10_10.pth")
    assert ckpt.detect_layout(official) == "ast_official"
    loaded = dass.from_pretrained(tmp_path / "audioset_10_10.pth")
    assert loaded.model_type == "ast"
    x = torch.randn(1, 1024, 128)
    assert torch.equal(logits_of(loaded, x), logits_of(ast, x))
    ckpt.save_pretrained(loaded, tmp_path / "ast")
    assert torch.equal(logits_of(dass.from_pretrained(tmp_path / "ast"), x), logits_of(ast, x))


# ------------------------------------------------------------------------------------ convert CLI


def test_convert_cli(tmp_path, model, features, logits, capsys) -> None:
    torch.save(authors_layout(model.state_dict()), tmp_path / "a.pth")
    csv_lines = ["index,mid,display_name"] + [f'{i},/m/{i:04d},"{name}"' for i, name in enumerate(LABELS)]
    (tmp_path / "labels.csv").write_text("\n".join(csv_lines) + "\n")

    src = str(tmp_path / "a.pth")
    assert cli_main(["convert", src, str(tmp_path / "ours"), "--labels", str(tmp_path / "labels.csv")]) == 0
    out = capsys.readouterr().out
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert out.strip() == (f"wrote {tmp_path / 'ours'} (dass format): dass, depths [1, 1, 2, 1], "
                           f"dims [48, 96, 192, 384], 5 classes with class names, {millions:.2f} M parameters")
    ours = dass.from_pretrained(tmp_path / "ours")
    assert ours.config.labels == LABELS and torch.equal(logits_of(ours, features), logits)

    assert cli_main(["convert", str(tmp_path / "ours"), str(tmp_path / "hf"), "--format", "hf"]) == 0
    hf_state = ckpt.load_state_dict_file(tmp_path / "hf" / "model.safetensors")
    want = hf_layout(model.state_dict())
    assert hf_state.keys() == want.keys() and all(torch.equal(hf_state[k], want[k]) for k in want)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["id2label"]["3"] == "Rain, storm"

    assert cli_main(["convert", str(tmp_path / "hf"), str(tmp_path / "back.pth"), "--format", "authors"]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    want = authors_layout(model.state_dict())
    assert back.keys() == want.keys() and all(torch.equal(back[k], want[k]) for k in want)
    capsys.readouterr()

    (tmp_path / "bad.csv").write_text("name\nSpeech\n")
    assert cli_main(["convert", src, str(tmp_path / "x"), "--labels", str(tmp_path / "bad.csv")]) == 1
    assert "bad.csv: line 1: expected the header 'index,mid,display_name', got 'name'" in capsys.readouterr().err
    (tmp_path / "three.csv").write_text("\n".join(csv_lines[:4]) + "\n")
    assert cli_main(["convert", src, str(tmp_path / "x"), "--labels", str(tmp_path / "three.csv")]) == 1
    assert "DASSConfig: 3 labels given for num_classes=5" in capsys.readouterr().err
    assert cli_main(["convert", str(tmp_path / "nope.pth"), str(tmp_path / "x")]) == 1
    assert "dass convert: error: no such checkpoint file or folder" in capsys.readouterr().err
