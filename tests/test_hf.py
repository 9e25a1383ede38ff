"""transformers integration (dass.hf): the model card's snippet, the pipeline, released-layout folders,
``dass.from_pretrained`` / ``dass tag`` on folders saved by transformers, and a Trainer-style forward.

Every folder is written here from a tiny random model (no network).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("transformers")

import dass  # noqa: E402
import dass.hf  # noqa: E402  (registers "dass" with the Auto classes)
from dass.checkpoints import state_dict_to_hf_dass  # noqa: E402
from dass.cli import main as cli_main  # noqa: E402
from dass.errors import ConfigError  # noqa: E402
from dass.features import FeatureExtractor  # noqa: E402
from dass.hf import DASSConfig, DASSFeatureExtractor, DASSForAudioClassification  # noqa: E402
from dass.models.dass import DASS  # noqa: E402
from dass.models.dass import DASSConfig as NetworkConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    pipeline,
)

torch.set_num_threads(1)

LABELS = ["Dog", "Cat", "Speech", "Music"]
TINY = {"depths": [1, 2, 1, 1], "dims": [8, 16, 32, 64]}  # R = 1, 1, 2, 4: every dt_rank path
FRAMES = 100  # feature frames per clip in these tests (1024 in the released models)
SAMPLES = 400 + (FRAMES - 1) * 160  # exactly FRAMES Kaldi frames at 16 kHz (1.015 s)
STEM = {"0": "0", "2": "1", "5": "3", "7": "4"}  # our stem indices -> released (conv, LN, conv, LN)


def released_name(key: str) -> str:
    """Our DASS key -> the Hugging Face release's name, written from SPEC §3b (independent of dass.checkpoints)."""
    key = re.sub(r"^patch_embed\.(\d)\.", lambda m: f"patch_embeddings.projection.{STEM[m.group(1)]}.", key)
    if key.startswith("classifier.head."):
        return key[len("classifier."):]
    key = key.replace("classifier.norm.", "norm.")
    key = key.replace(".op.x_proj_weight", ".op.x_proj.weight").replace(".op.dt_projs_weight", ".op.dt_projs.weight")
    key = key.replace(".downsample.1.", ".downsample.down.").replace(".downsample.3.", ".downsample.norm.")
    return "dass." + key


def released_state_dict(net: DASS) -> dict[str, torch.Tensor]:
    """``net``'s weights in the released layout: renamed, and the direction-stacked weights flattened."""
    out = {}
    for key, value in net.state_dict().items():
        if key.endswith((".op.x_proj_weight", ".op.dt_projs_weight")):  # (4, a, b) -> (4a, b)
            value = value.reshape(4 * value.shape[1], value.shape[2])
        out[released_name(key)] = value.contiguous()
    return out


def waveform(seed: int, samples: int = SAMPLES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(samples)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A folder written by DASSForAudioClassification / DASSFeatureExtractor.save_pretrained, and the model."""
    folder = tmp_path_factory.mktemp("hf_saved")
    torch.manual_seed(0)
    config = DASSConfig(**TINY, id2label=dict(enumerate(LABELS)), max_length=FRAMES)
    model = DASSForAudioClassification(config).eval()
    model.save_pretrained(folder)
    DASSFeatureExtractor(max_length=FRAMES).save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A folder in the released layout (config.json with auto_map to absent remote code) and our DASS."""
    folder = tmp_path_factory.mktemp("hf_released")
    torch.manual_seed(1)
    net = DASS(NetworkConfig(depths=tuple(TINY["depths"]), dims=tuple(TINY["dims"]), num_classes=4)).eval()
    with torch.no_grad():  # break the init symmetries (A_logs = 0, Ds = 1, LN 1/0) so every tensor matters
        for param in net.parameters():
            param.add_(0.05 * torch.randn_like(param))
    save_file(released_state_dict(net), str(folder / "model.safetensors"))
    config = {
        "model_type": "dass",
        "architectures": ["DASSForAudioClassification"],
        "auto_map": {"AutoConfig": "configuration_dass.DASSConfig",
                     "AutoModelForAudioClassification": "modeling_dass.DASSForAudioClassification"},
        **TINY, "num_classes": 4, "patch_size": 4, "embed_dim": 8, "drop_path_rate": 0.2,
        "max_length": 1024, "num_mel_bins": 128, "use_checkpoint": False, "torch_dtype": "float32",
        "id2label": {str(i): name for i, name in enumerate(LABELS)},
        "label2id": {name: i for i, name in enumerate(LABELS)},
        "some_key_of_the_remote_code": [1, 2],  # unknown keys are tolerated
        "transformers_version": "4.44.0",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder, net


def test_model_card_snippet_on_saved_folder(saved) -> None:
    folder, original = saved
    saved_config = json.loads((folder / "config.json").read_text())
    assert saved_config["model_type"] == "dass" and "auto_map" not in saved_config
    assert saved_config["num_classes"] == 4 and saved_config["depths"] == [1, 2, 1, 1]

    config = AutoConfig.from_pretrained(folder)
    audio_model = AutoModelForAudioClassification.from_pretrained(folder)
    feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
    assert isinstance(config, DASSConfig) and config.num_classes == 4
    assert isinstance(audio_model, DASSForAudioClassification) and not audio_model.training
    assert isinstance(feature_extractor, DASSFeatureExtractor) and feature_extractor.max_length == FRAMES

    wave, sr = waveform(0), 16000
    inputs = feature_extractor(wave, sr, return_tensors="pt")
    assert list(inputs) == ["input_values"] and inputs["input_values"].shape == (1, FRAMES, 128)
    reference = FeatureExtractor(max_length=FRAMES)(torch.from_numpy(wave))["input_values"]
    assert torch.equal(inputs["input_values"], reference)
    with torch.no_grad():
        logits = torch.sigmoid(audio_model(**inputs).logits)
        expected = torch.sigmoid(original(reference).logits)
    assert logits.shape == (1, 4) and torch.equal(logits, expected)
    predicted_class_ids = torch.where(logits[0] > 0.5)[0]
    predicted_label = [audio_model.config.id2label[i.item()] for i in predicted_class_ids]
    assert predicted_label == [LABELS[i] for i in range(4) if expected[0, i] > 0.5]


def test_pipeline_returns_labelled_scores(saved) -> None:
    folder, original = saved
    tagger = pipeline("audio-classification", model=str(folder))
    wave = waveform(1)
    result = tagger(wave, top_k=4)
    with torch.no_grad():
        probabilities = torch.sigmoid(original(**DASSFeatureExtractor(max_length=FRAMES)(wave, 16000,
                                                                                         return_tensors="pt")).logits)[0]
    order = torch.argsort(probabilities, descending=True).tolist()
    assert [row["label"] for row in result] == [LABELS[i] for i in order]
    assert np.allclose([row["score"] for row in result], probabilities[order].numpy(), rtol=0, atol=1e-6)
    assert len(tagger(wave)) == 4  # default top_k=5 is capped at the number of classes


def test_released_layout_loads_and_matches_dass_logits(released, tmp_path) -> None:
    folder, net = released
    expected_keys = released_state_dict(net)
    assert {k: tuple(v.shape) for k, v in state_dict_to_hf_dass(net.state_dict()).items()} == \
        {k: tuple(v.shape) for k, v in expected_keys.items()}  # dass.checkpoints agrees with SPEC §3b

    model = AutoModelForAudioClassification.from_pretrained(folder)
    assert isinstance(model, DASSForAudioClassification)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in expected_keys.items()}
    assert model.config.id2label == dict(enumerate(LABELS)) and model.config.some_key_of_the_remote_code == [1, 2]
    x = torch.randn(2, 77, 128)  # odd length: 77 -> 39 -> 20 -> 10 -> 5 -> 3 time steps
    with torch.no_grad():
        assert torch.equal(model(x).logits, net(x))
        # auto_map points at remote code that is not there: trust_remote_code=True still uses ours
        trusted = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True)
        assert isinstance(trusted, DASSForAudioClassification) and torch.equal(trusted(x).logits, net(x))
        # dass's own loader reads the same folder
        ours = dass.from_pretrained(folder)
        assert isinstance(ours, DASS) and ours.config.labels == LABELS and torch.equal(ours(x), net(x))

    model.save_pretrained(tmp_path / "resaved")
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert "auto_map" not in resaved and resaved["num_classes"] == 4
    with torch.no_grad():
        assert torch.equal(AutoModelForAudioClassification.from_pretrained(tmp_path / "resaved")(x).logits, net(x))


def test_backward_matches_dass(released) -> None:
    """Same loss, same gradients as dass's DASS (the flat x_proj / dt_projs receive the stacked grads)."""
    folder, net = released
    model = AutoModelForAudioClassification.from_pretrained(folder)
    x = torch.randn(3, 45, 128)
    labels = (torch.rand(3, 4) > 0.5).float()
    out = model(input_values=x, labels=labels)
    reference = torch.nn.functional.binary_cross_entropy_with_logits(net(x), labels)
    net.zero_grad()
    reference.backward()
    out.loss.backward()
    assert torch.equal(out.loss, reference)
    expected = state_dict_to_hf_dass({k: p.grad for k, p in net.named_parameters()})
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert set(grads) == set(expected)
    for key, grad in grads.items():
        assert grad is not None and torch.allclose(grad, expected[key], rtol=1e-5, atol=1e-7), key
    assert grads["dass.layers.2.blocks.0.op.x_proj.weight"].abs().sum() > 0


def test_trainer_style_forward_returns_loss(saved) -> None:
    folder, _ = saved
    model = AutoModelForAudioClassification.from_pretrained(folder).train()  # drop path active
    batch = {"input_values": torch.randn(2, 64, 128), "labels": torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])}
    torch.manual_seed(3)
    out = model(**batch)
    assert out.loss.shape == () and out.logits.shape == (2, 4) and out[0] is out.loss  # what Trainer reads
    z = out.logits.detach().double()
    y = batch["labels"].double()
    bce = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z))).mean()
    assert abs(out.loss.item() - bce.item()) < 1e-6
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    torch.manual_seed(3)
    loss, logits = model(**batch, return_dict=False)
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits)
    assert model(batch["input_values"]).loss is None
    with pytest.raises(ConfigError, match=r"labels must be multi-hot targets of shape \(batch, num_labels\) = "
                                          r"\(2, 4\), got \(2,\)"):
        model(batch["input_values"], labels=torch.tensor([0, 3]))
    hidden = model.eval()(batch["input_values"], output_hidden_states=True).hidden_states
    assert [tuple(h.shape) for h in hidden] == [(2, 8, 32, 16), (2, 8, 32, 16), (2, 16, 16, 8),
                                                (2, 32, 8, 4), (2, 64, 4, 2)]


def test_fine_tuning_head_and_config_checks(released) -> None:
    folder, net = released
    model = AutoModelForAudioClassification.from_pretrained(folder, num_labels=6, ignore_mismatched_sizes=True)
    assert model.head.weight.shape == (6, 64) and model.config.num_classes == 6
    loaded = released_state_dict(net)
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(v, loaded[k]) for k, v in body.items())

    with pytest.raises(ConfigError, match="DASSConfig: num_classes=3 but id2label names 4 classes"):
        DASSConfig(num_classes=3, id2label=dict(enumerate(LABELS)))
    with pytest.raises(ConfigError, match="patch_size 8 is not supported"):
        DASSForAudioClassification(DASSConfig(**TINY, num_classes=2, patch_size=8))
    default = DASSConfig()
    assert (default.num_classes, default.depths, default.dims, default.embed_dim) == (527, [2, 2, 8, 2],
                                                                                      [96, 192, 384, 768], 96)
    assert DASSConfig(dims=48, depths=[1, 1], num_classes=2).to_network_config().dims == (48, 96)


def test_feature_extractor_batches_resamples_and_rejects(tmp_path) -> None:
    fe = DASSFeatureExtractor(max_length=None)
    short, long = waveform(2, 8000), waveform(3, 12000)
    out = fe([short, long], sampling_rate=16000, return_tensors="np", return_attention_mask=True)
    reference = FeatureExtractor(max_length=None)([torch.from_numpy(short), torch.from_numpy(long)],
                                                  return_attention_mask=True)
    assert isinstance(out["input_values"], np.ndarray) and out["input_values"].shape == (2, 73, 128)
    assert np.array_equal(out["input_values"], reference["input_values"].numpy())
    assert out["attention_mask"].sum(axis=1).tolist() == [48, 73]
    at_22k = waveform(4, 22050)
    resampled = fe(at_22k, sampling_rate=22050, return_tensors="pt")["input_values"]
    assert torch.equal(resampled, FeatureExtractor(max_length=None)(torch.from_numpy(at_22k), 22050)["input_values"])
    assert resampled.shape == (1, 98, 128)
    with pytest.raises(ConfigError, match="unsupported argument.*padding"):
        fe(short, sampling_rate=16000, padding="max_length")
    with pytest.raises(ConfigError, match="return_tensors must be 'pt', 'np' or None, got 'tf'"):
        fe(short, sampling_rate=16000, return_tensors="tf")
    fe.save_pretrained(tmp_path)
    reloaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(reloaded, DASSFeatureExtractor) and reloaded.max_length is None


def test_dass_from_pretrained_and_tag_on_saved_folder(saved, tmp_path, capsys) -> None:
    folder, original = saved
    ours = dass.from_pretrained(folder)
    assert isinstance(ours, DASS) and ours.config.labels == LABELS and ours.config.depths == (1, 2, 1, 1)
    wav = tmp_path / "clip.wav"
    sf.write(wav, waveform(5), 16000, subtype="FLOAT")
    features = DASSFeatureExtractor(max_length=FRAMES)(sf.read(wav, dtype="float32")[0], 16000,
                                                       return_tensors="pt")["input_values"]
    with torch.no_grad():
        expected = torch.sigmoid(original(features).logits)[0]
        assert torch.equal(ours(features), original(features).logits)
    code = cli_main(["tag", str(wav), "--model", str(folder), "--json", "--top-k", "0", "--device", "cpu",
                     "--max-frames", str(FRAMES), "--min-frames", str(FRAMES)])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)["results"][0]["top"]
    assert [row["label"] for row in rows] == [LABELS[i] for i in torch.argsort(expected, descending=True).tolist()]
    assert np.allclose([row["probability"] for row in rows], sorted(expected.tolist(), reverse=True), atol=1e-6)


def test_import_dass_does_not_import_transformers() -> None:
    """``import dass`` stays light; ``import dass.hf`` without transformers says how to install it;
    with it, ``import dass.hf`` alone registers "dass"."""
    code = ("import sys, dass, dass.checkpoints, dass.models.dass, dass.features\n"
            "assert 'transformers' not in sys.modules, 'transformers imported'\n"
            "sys.modules['transformers'] = None  # as if it were not installed\n"
            "try:\n"
            "    import dass.hf\n"
            "except ImportError as error:\n"
            "    assert 'install it with `pip install dass[hf]`' in str(error), error\n"
            "else:\n"
            "    raise AssertionError('no ImportError')\n"
            "del sys.modules['transformers']\n"
            "import dass.hf, transformers\n"
            "assert type(transformers.AutoConfig.for_model('dass')).__name__ == 'DASSConfig'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
