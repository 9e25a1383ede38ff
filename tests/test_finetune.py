"""Fine-tuning from self-supervised checkpoints (``model.init_from``), the head learning rate,
single-label tasks (cross-entropy, accuracy, top-5, confusion matrix), ``dass evaluate`` and
``dass norm-stats``.

A single-label corpus of 24 procedural 0.7-second clips (4 classes: tone, noise, chirp, clicks) is
written once per session; models are tiny (width 32, 1-2 blocks) on 64-frame inputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dass.errors import CheckpointError, ConfigError, DassError

torch.set_num_threads(1)
SR = 16000
CLASSES = [
    ("/m/01v_m0", "Sine wave"),
    ("/m/0chx_", "White noise"),
    ("/m/0hdsk", "Chirp tone"),
    ("/m/07qc9xj", "Clicking"),
]
SSAMBA_MINI = {"embed_dim": 32, "depth": 2, "drop_path_rate": 0.0}


def _clip(rng: np.random.Generator, label: int) -> np.ndarray:
    t = np.arange(int(0.7 * SR)) / SR
    if label == 0:
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(300, 900) * t)
    elif label == 1:
        x = 0.1 * rng.normal(size=t.size)
    elif label == 2:
        x = 0.3 * np.sin(2 * np.pi * (rng.uniform(200, 500) * t + 2000 * t**2))
    else:
        x = np.zeros_like(t)
        x[:: rng.integers(1500, 3000)] = 0.8
    return np.clip(x + 0.001 * rng.normal(size=t.size), -1, 1).astype(np.float32)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    from dass.audio import save_audio
    from dass.data.labels import LabelInfo, write_class_labels_csv

    root = tmp_path_factory.mktemp("kws")
    (root / "audio").mkdir()
    write_class_labels_csv(root / "class_labels_indices.csv", [LabelInfo(i, m, n) for i, (m, n) in enumerate(CLASSES)])
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("eval", 8)):
        entries = []
        for i in range(count):
            name = f"audio/{split}_{i:02d}.wav"
            save_audio(root / name, _clip(rng, i % 4), SR)
            entries.append({"wav": name, "labels": CLASSES[i % 4][0]})
        (root / f"{split}.json").write_text(json.dumps({"data": entries}))
    return root


def train_config(corpus: Path, out: Path, **sections) -> dict:
    cfg = {
        "data": {"train": str(corpus / "train.json"), "eval": str(corpus / "eval.json"), "max_length": 64},
        "augment": {"mixup": 0.0, "freqm": 0, "timem": 0},
        "model": {"name": "ssamba_nano", "args": {**SSAMBA_MINI, "fstride": 16, "tstride": 16, "input_tdim": 64}},
        "optim": {
            "batch_size": 4,
            "epochs": 1,
            "lr": 1e-3,
            "warmup_steps": 2,
            "lr_decay_start": 1,
            "lr_decay_every": 1,
            "wa_start": 0,
        },
        "run": {"output_dir": str(out), "checkpoint_every": 0, "progress": False, "eval_batch_size": 8},
    }
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


@pytest.fixture()
def ssl_folder(tmp_path: Path) -> Path:
    """A self-supervised SSAMBA checkpoint (64 frames, stride 16: 8 x 4 patches) with non-trivial weights."""
    from dass.models.registry import create_model
    from dass.pretrain.checkpoint import save_ssl
    from dass.pretrain.model import MaskedPatchModel

    torch.manual_seed(11)
    encoder = create_model("ssamba_nano", num_classes=1, fstride=16, tstride=16, input_tdim=64, **SSAMBA_MINI)
    model = MaskedPatchModel(encoder)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return save_ssl(model, tmp_path / "ssl")


def _build(cfg: dict):
    from dass.train.config import config_from_dict
    from dass.train.trainer import _build_student

    config = config_from_dict(cfg)
    config.validate()
    torch.manual_seed(config.run.seed)
    return _build_student(config, 4, [n for _, n in CLASSES])


def _encoder_state(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("mlp_head.")}


# --------------------------------------------------------------------------------------- init_from


def test_init_from_an_ssl_folder_starts_from_its_encoder_with_a_fresh_head(
    corpus: Path, ssl_folder: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from dass.train.config import config_from_dict
    from dass.train.trainer import train

    cfg = train_config(
        corpus,
        tmp_path / "run",
        model={
            "name": "unused",
            "init_from": str(ssl_folder),
            "args": {"fstride": 16, "tstride": 16, "input_tdim": 64},
        },
    )
    model = _build(cfg)
    ssl = load_file(str(ssl_folder / "model.safetensors"))
    got = model.state_dict()
    assert _encoder_state(got).keys() == _encoder_state(ssl).keys()
    for k, v in _encoder_state(ssl).items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    # the head: 4 classes, the default init of a new model (LayerNorm 1/0, Linear as PyTorch draws it)
    assert got["mlp_head.1.weight"].shape == (4, 32) and model.config.labels == [n for _, n in CLASSES]
    torch.testing.assert_close(got["mlp_head.0.weight"], torch.ones(32))
    torch.testing.assert_close(got["mlp_head.0.bias"], torch.zeros(32))
    assert _build(cfg).state_dict()["mlp_head.1.weight"].equal(got["mlp_head.1.weight"])  # seeded by run.seed
    other_seed = dict(cfg, run={**cfg["run"], "seed": 1})
    assert not _build(other_seed).state_dict()["mlp_head.1.weight"].equal(got["mlp_head.1.weight"])
    # a training run at lr 0 leaves the encoder exactly where the checkpoint put it
    cfg["optim"] = {**cfg["optim"], "lr": 0.0}
    train(config_from_dict(cfg))
    after = load_file(str(tmp_path / "run/epochs/epoch_001.safetensors"))
    for k, v in _encoder_state(ssl).items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)


def test_init_from_adapts_the_position_table_and_the_stride(corpus: Path, ssl_folder: Path) -> None:
    from safetensors.torch import load_file

    cfg = train_config(
        corpus,
        Path("unused"),
        model={"init_from": str(ssl_folder), "args": {"fstride": 10, "tstride": 10, "input_tdim": 100}},
    )
    model = _build(cfg)
    assert model.config.grid == (12, 9) and model.patch_embed.proj.stride == (10, 10)
    ssl = load_file(str(ssl_folder / "model.safetensors"))
    table = ssl["pos_embed"]  # (1, 1 + 8 * 4, 32): grid 8 x 4, frequency-major
    grid = table[:, 1:].reshape(1, 8, 4, 32).permute(0, 3, 1, 2)
    # more time patches: bilinear along time to (8, 9); more frequency patches: bilinear to (12, 9)
    want = F.interpolate(grid, size=(8, 9), mode="bilinear", align_corners=False)
    want = F.interpolate(want, size=(12, 9), mode="bilinear", align_corners=False)
    want = torch.cat([table[:, :1], want.permute(0, 2, 3, 1).reshape(1, 108, 32)], dim=1)
    torch.testing.assert_close(model.pos_embed.detach(), want)
    torch.testing.assert_close(model.patch_embed.proj.weight.detach(), ssl["patch_embed.proj.weight"], rtol=0, atol=0)
    # a shorter fine-tuning input: the centre time columns [1, 3) of the 4
    cfg["model"]["args"] = {"fstride": 16, "tstride": 16, "input_tdim": 32}
    short = _build(cfg)
    cols = grid[:, :, :, 1:3].permute(0, 2, 3, 1).reshape(1, 16, 32)
    torch.testing.assert_close(short.pos_embed.detach(), torch.cat([table[:, :1], cols], dim=1))


def test_init_from_the_authors_ssl_pth(corpus: Path, ssl_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from dass.models.ssamba import config_and_state_from_authors
    from dass.pretrain.checkpoint import export_authors

    pth = export_authors(ssl_folder, tmp_path / "ssl.pth")
    cfg = train_config(
        corpus,
        tmp_path / "run",
        model={"init_from": str(pth), "args": {"fstride": 16, "tstride": 16, "input_tdim": 64}},
    )
    model = _build(cfg)
    ssl = load_file(str(ssl_folder / "model.safetensors"))
    got = model.state_dict()
    for k, v in _encoder_state(ssl).items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    torch.testing.assert_close(got["mlp_head.0.weight"], torch.ones(32))
    # their fine-tuning geometry: strides 10, the authors' table rule (8 rows, then frequency)
    cfg["model"]["args"] = {"fstride": 10, "tstride": 10, "input_tdim": 128, "drop_path_rate": 0.0}
    model = _build(cfg)
    _, want = config_and_state_from_authors(
        torch.load(pth, weights_only=True), fstride=10, tstride=10, input_tdim=128, num_classes=4
    )
    torch.testing.assert_close(model.pos_embed.detach(), want["pos_embed"], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="no such checkpoint file or folder"):
        _build(train_config(corpus, tmp_path / "x", model={"init_from": str(tmp_path / "missing.pth")}))
    with pytest.raises(ConfigError, match="set model.init .* or model.init_from .* not both"):
        _build(train_config(corpus, tmp_path / "x", model={"init_from": str(pth), "init": str(pth)}))


def test_head_learning_rate_multiplier(corpus: Path, tmp_path: Path) -> None:
    from dass.train.config import OptimConfig
    from dass.train.finetune import head_keys, parameter_groups
    from dass.train.trainer import WarmupMultiStep

    model = _build(train_config(corpus, tmp_path))
    groups = parameter_groups(model, 3.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in groups[1]["params"]) == sorted(head_keys(model))
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    optimizer = torch.optim.Adam(groups, lr=1.0)
    schedule = WarmupMultiStep(optimizer, OptimConfig(lr=2e-4, warmup_steps=4))
    lr = schedule.set(1, 0)
    assert lr == pytest.approx(1e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(1e-4), pytest.approx(3e-4)]
    assert len(parameter_groups(model, 1.0)) == 1


# ---------------------------------------------------------------------------------- single-label


def test_single_label_loss_and_metrics_against_formulas() -> None:
    from dass.train.tasks import confusion_matrix, task_loss, task_metrics, top_k_accuracy

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.2, 0.1], [0.0, 3.0, 1.0], [0.0, 0.1, 0.2]])
    labels = torch.tensor([0, 1, 1, 0])
    targets = F.one_hot(labels, 3).float()
    want = -sum(math.log(math.exp(logits[i, labels[i]]) / sum(math.exp(v) for v in logits[i])) for i in range(4)) / 4
    assert task_loss(logits, targets, "singlelabel").item() == pytest.approx(want, rel=1e-6)
    soft = torch.tensor([[0.7, 0.3, 0.0]] * 4)  # mixup: -sum_c y_c log p_c
    want_soft = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert task_loss(logits, soft, "singlelabel").item() == pytest.approx(want_soft.item(), rel=1e-6)
    scores = torch.softmax(logits, 1)
    metrics = task_metrics(scores, targets, "singlelabel")
    assert metrics["accuracy"] == 0.5  # clips 0 and 2 right, 1 (predicts 0) and 3 (predicts 2) wrong
    assert top_k_accuracy(scores, labels, 2) == 0.75  # clip 3's label 0 is its lowest score
    assert metrics["top5_accuracy"] == 1.0  # 3 classes: every label is in the top 5
    assert {"mAP", "mAUC", "d_prime"} <= set(metrics)
    assert confusion_matrix(scores, labels, 3).tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    with pytest.raises(ConfigError, match="data.task must be one of multilabel, singlelabel"):
        task_loss(logits, targets, "regression")


def test_single_label_training_reports_accuracy_and_a_confusion_matrix(corpus: Path, tmp_path: Path) -> None:
    from dass.checkpoints import from_pretrained
    from dass.cli import main
    from dass.data.dataset import AudioTaggingDataset
    from dass.train.config import config_from_dict
    from dass.train.trainer import train

    out = tmp_path / "run"
    cfg = train_config(
        corpus,
        out,
        data={"task": "singlelabel"},
        optim={"epochs": 2, "head_lr_multiplier": 2.0},
        augment={"mixup": 0.5},
    )
    result = train(config_from_dict(cfg))
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,global_step,train_loss,lr,accuracy,top5_accuracy,mAP,mAUC,d_prime")
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    # the reported accuracy is the final model's argmax accuracy on the eval clips, recomputed here
    model = from_pretrained(out / "final")
    ds = AudioTaggingDataset(corpus / "eval.json", max_length=64)
    with torch.no_grad():
        logits = model(torch.stack([ds[i]["features"] for i in range(len(ds))]))
    labels = torch.tensor([ds.clips[i].label_indices[0] for i in range(len(ds))])
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert result["top5_accuracy"] == 1.0
    # dass evaluate gives the same numbers
    assert (
        main(
            [
                "evaluate",
                str(out / "final"),
                str(corpus / "eval.json"),
                "--task",
                "singlelabel",
                "--max-length",
                "64",
                "--out",
                str(tmp_path / "m.json"),
                "--confusion",
                str(tmp_path / "c.png"),
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "m.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(result["accuracy"]) and evaluated["mAP"] == pytest.approx(
        result["mAP"]
    )
    assert (tmp_path / "c.png").exists()


def test_single_label_refuses_multi_label_clips(corpus: Path, tmp_path: Path) -> None:
    from dass.train.config import config_from_dict
    from dass.train.trainer import train

    bad = tmp_path / "multi.json"
    entries = json.loads((corpus / "train.json").read_text())["data"]
    entries[3] = {**entries[3], "labels": f"{CLASSES[0][0]},{CLASSES[1][0]}"}
    bad.write_text(json.dumps({"data": [{**e, "wav": str(corpus / e["wav"])} for e in entries]}))
    cfg = train_config(
        corpus,
        tmp_path / "run",
        data={"task": "singlelabel", "train": str(bad), "labels": str(corpus / "class_labels_indices.csv")},
    )
    with pytest.raises(DassError, match=r"multi.json: entry 3 \(.*train_03.wav\) has 2 labels; data.task=singlelabel"):
        train(config_from_dict(cfg))


# ------------------------------------------------------------------------------------ norm-stats


def test_norm_stats_equal_a_direct_computation(corpus: Path, tmp_path: Path, capsys) -> None:
    import soundfile

    from dass.cli import main
    from dass.features import kaldi_fbank

    cells = []
    for entry in json.loads((corpus / "train.json").read_text())["data"]:
        wave, rate = soundfile.read(corpus / entry["wav"], dtype="float32")
        fbank = kaldi_fbank(torch.from_numpy(wave - wave.mean()), rate, 128)[:50]
        cells.append(fbank.double().reshape(-1))
    cells = torch.cat(cells)
    out = tmp_path / "stats.json"
    assert main(["norm-stats", str(corpus / "train.json"), "--max-length", "50", "--out", str(out), "--quiet"]) == 0
    stats = json.loads(out.read_text())
    assert stats["clips"] == 16 and stats["frames"] == 16 * 50
    assert stats["mean"] == pytest.approx(cells.mean().item(), rel=1e-6)
    assert stats["std"] == pytest.approx(cells.std(unbiased=False).item(), rel=1e-6)
    assert f"data.mean={stats['mean']:.7g} data.std={stats['std']:.7g}" in capsys.readouterr().out
