"""Training: data pipeline, config, one epoch, KD with cached logits, torchrun DDP, SIGKILL + resume.

A corpus of 24 procedural 2-second clips (4 classes: tone, noise, chirp, clicks) is written once per
session; models are tiny (AST width 32 / 1 block, DASS dims 8-16) and clips are cut to 200 frames.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dass.errors import ConfigError, DassError
from dass.train.config import apply_overrides, config_from_dict, load_config

torch.set_num_threads(1)
SR = 16000
CLASSES = [("/m/01v_m0", "Sine wave"), ("/m/0chx_", "White noise"), ("/m/0hdsk", "Chirp tone"), ("/m/07qc9xj", "Clicking")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _clip(rng: np.random.Generator, labels: list[int]) -> np.ndarray:
    t = np.arange(2 * SR) / SR
    x = np.zeros_like(t)
    if 0 in labels:
        x += 0.3 * np.sin(2 * np.pi * rng.uniform(300, 900) * t)
    if 1 in labels:
        x += 0.1 * rng.normal(size=t.size)
    if 2 in labels:
        f0 = rng.uniform(200, 500)
        x += 0.3 * np.sin(2 * np.pi * (f0 * t + 800 * t**2))
    if 3 in labels:
        x[:: rng.integers(1500, 3000)] += 0.8
    return np.clip(x + 0.001 * rng.normal(size=t.size), -1, 1).astype(np.float32)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    from dass.audio import save_audio
    from dass.data.labels import LabelInfo, write_class_labels_csv

    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    write_class_labels_csv(root / "class_labels_indices.csv", [LabelInfo(i, m, n) for i, (m, n) in enumerate(CLASSES)])
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("eval", 8)):
        entries = []
        for i in range(count):
            labels = sorted({i % 4} | ({int(rng.integers(4))} if rng.random() < 0.4 else set()))
            name = f"audio/{split}_{i:02d}.flac"
            save_audio(root / name, _clip(rng, labels), SR)
            entries.append({"wav": name, "labels": ",".join(CLASSES[j][0] for j in labels)})
        (root / f"{split}.json").write_text(json.dumps({"data": entries}))
    return root


AST_MINI = {"embed_dim": 32, "depth": 1, "num_heads": 2, "input_tdim": 200}


def base_config(corpus: Path, out: Path, **sections) -> dict:
    cfg = {
        "data": {"train": str(corpus / "train.json"), "eval": str(corpus / "eval.json"), "max_length": 200},
        "augment": {"mixup": 0.0, "freqm": 0, "timem": 0},
        "model": {"name": "ast_tiny", "args": dict(AST_MINI)},
        "optim": {"batch_size": 4, "epochs": 1, "lr": 1e-3, "warmup_steps": 3, "lr_decay_start": 1,
                  "lr_decay_every": 1, "wa_start": 0},
        "run": {"output_dir": str(out), "checkpoint_every": 0, "progress": False, "eval_batch_size": 8},
    }
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def run_training(cfg: dict, resume: bool = False) -> dict:
    from dass.train.trainer import train

    return train(config_from_dict(cfg), resume=resume)


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"weights differ by {worst}"


# ----------------------------------------------------------------------------------- data + config


def test_dataset_items_mixup_specaugment_and_weights(corpus: Path, tmp_path: Path) -> None:
    from dass.data.dataset import AudioTaggingDataset
    from dass.features import FeatureExtractor

    ds = AudioTaggingDataset(corpus / "train.json", max_length=200, mixup=1.0, freqm=20, timem=50,
                             cache_dir=tmp_path / "cache")
    assert len(ds) == 16 and ds.num_classes == 4
    item = ds[(3, 1234)]
    again = ds[(3, 1234)]
    torch.testing.assert_close(item["features"], again["features"])  # same seed, same augmentation
    assert item["features"].shape == (200, 128)
    lam, other = item["mix_lambda"], item["mix_index"]
    assert 0 < lam < 1
    torch.testing.assert_close(item["targets"], lam * ds.targets(3) + (1 - lam) * ds.targets(other))
    # rebuild the item by hand: same draws, AST's waveform mixup, masks on the un-normalised log-mel
    from dass.audio import load_audio
    from dass.data.dataset import spec_augment_mask

    rng = np.random.default_rng(1234)
    assert rng.random() < 1.0
    assert (int(rng.integers(16)), float(rng.beta(10, 10))) == (other, lam)
    (f0, f1), (t0, t1) = spec_augment_mask(rng, 128, 20), spec_augment_mask(rng, 200, 50)
    w1, w2 = load_audio(ds.clips[3].path), load_audio(ds.clips[other].path)  # both 2 s long
    mixed = lam * (w1 - w1.mean()) + (1 - lam) * (w2 - w2.mean())
    want = FeatureExtractor(max_length=200)(mixed)["input_values"][0]
    masked_value = (0.0 - ds.extractor.mean) / (2 * ds.extractor.std)
    want[:, f0:f1] = masked_value
    want[t0:t1, :] = masked_value
    assert 0 < f1 - f0 < 20 and 0 < t1 - t0 < 50
    torch.testing.assert_close(item["features"], want, rtol=1e-5, atol=1e-5)
    # un-augmented item == FeatureExtractor on the decoded file (the cache stores the same numbers)
    plain = AudioTaggingDataset(corpus / "train.json", max_length=200, cache_dir=tmp_path / "cache2")
    want = FeatureExtractor(max_length=200).from_file(plain.clips[5].path)[0]
    torch.testing.assert_close(plain[5]["features"], want)
    assert len(list((tmp_path / "cache2").rglob("*.npy"))) == 1
    torch.testing.assert_close(plain[5]["features"], want)  # now read from the cache
    # class-balanced weights: sum over labels of 1000 / (count + 0.01)
    counts = np.zeros(4)
    for c in plain.clips:
        counts[list(c.label_indices)] += 1
    w = plain.sample_weights()
    assert w[2] == pytest.approx(sum(1000 / (counts[j] + 0.01) for j in plain.clips[2].label_indices))


def test_dataset_errors_name_the_file(corpus: Path, tmp_path: Path) -> None:
    from dass.data.dataset import AudioTaggingDataset

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"wav": str(corpus / "audio/train_00.flac"), "labels": "/m/nope"}]}))
    with pytest.raises(DassError, match=r"bad.json: entry 0 .*unknown label '/m/nope'"):
        AudioTaggingDataset(bad, corpus / "class_labels_indices.csv")
    bad.write_text(json.dumps({"data": [{"wav": "missing.flac", "labels": CLASSES[0][0]}]}))
    with pytest.raises(DassError, match=r"bad.json: entry 0: audio file not found: .*missing.flac"):
        AudioTaggingDataset(bad, corpus / "class_labels_indices.csv")


def test_config_overrides_and_unknown_keys(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {train: a.json, eval: b.json}\noptim: {lr: 1.0e-4}\n")
    cfg = load_config(recipe, ["optim.lr=3e-4", "model.args.dims=[8, 16]", "kd.teachers=[x, y]", "data.cache_dir=null"])
    assert cfg.optim.lr == 3e-4 and cfg.model.args == {"dims": [8, 16]} and cfg.kd.teachers == ["x", "y"]
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'; valid keys: optim.batch_size, optim.epochs, optim.lr,"):
        apply_overrides(cfg, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizer.lr'; valid sections: data, augment, model, optim, kd, run"):
        apply_overrides(cfg, ["optimizer.lr=1"])
    with pytest.raises(ConfigError, match=r"optim.epochs: expected int, got 'many'"):
        apply_overrides(cfg, ["optim.epochs=many"])
    recipe.write_text("data: {train: a.json, eval: b.json, trian: c}\n")
    with pytest.raises(ConfigError, match=r"r.yaml: unknown config key 'data.trian'"):
        load_config(recipe)


def test_sampler_ranks_partition_the_global_batch() -> None:
    from dass.train.distributed import EpochSampler

    one = list(EpochSampler(22, 6, seed=5))
    r0 = list(EpochSampler(22, 3, rank=0, world_size=2, seed=5))
    r1 = list(EpochSampler(22, 3, rank=1, world_size=2, seed=5))
    assert len(one) == 18 and len(r0) == len(r1) == 9
    for step in range(3):
        assert one[6 * step : 6 * step + 6] == r0[3 * step : 3 * step + 3] + r1[3 * step : 3 * step + 3]
    resumed = EpochSampler(22, 6, seed=5)
    resumed.set_epoch(0, start_step=2)
    assert list(resumed) == one[12:]
    weighted = EpochSampler(4, 2, seed=0, weights=np.array([0.0, 1.0, 0.0, 1.0]), samples_per_epoch=40)
    assert {i for i, _ in weighted} == {1, 3}


def test_lr_schedule() -> None:
    from dass.train.config import OptimConfig
    from dass.train.trainer import lr_at

    cfg = OptimConfig(lr=1.0, warmup_steps=4, lr_decay_start=2, lr_decay_every=2, lr_decay_factor=0.5)
    assert [lr_at(cfg, s, 0) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [lr_at(cfg, 100, e) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


# ------------------------------------------------------------------------------------ training runs


def test_dass_student_epochs_write_metrics_and_weight_average(corpus: Path, tmp_path: Path) -> None:
    from dass.checkpoints import from_pretrained

    out = tmp_path / "run"
    cfg = base_config(corpus, out, model={"name": "dass_tiny", "args": {"dims": [8, 16, 16, 16], "depths": [1, 1, 1, 1],
                                                                          "drop_path_rate": 0.0}},
                      augment={"mixup": 0.5, "freqm": 16, "timem": 40}, data={"cache_dir": str(tmp_path / "cache")},
                      optim={"epochs": 2, "wa_start": 1})
    result = run_training(cfg)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,global_step,train_loss,lr,mAP,mAUC,d_prime")
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "final"]
    assert 0 < result["mAP"] <= 1 and 0 <= result["mAUC"] <= 1 and result["global_steps"] == 8
    assert result["weight_average_epochs"] == "1-2"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(list((tmp_path / "cache").rglob("*.npy"))) >= 8  # at least the eval clips
    # the final model is the average of the two epoch weights, saved for from_pretrained / dass tag
    e1, e2 = weights(out / "epochs/epoch_001.safetensors"), weights(out / "epochs/epoch_002.safetensors")
    model = from_pretrained(out / "final")
    assert model.config.labels == [n for _, n in CLASSES]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, (e1[k].double() + e2[k].double()).div(2).float())
    with pytest.raises(DassError, match="already holds a training checkpoint; pass --resume"):
        run_training(cfg)


def test_cached_logit_kd_equals_live_teacher(corpus: Path, tmp_path: Path) -> None:
    from dass.checkpoints import save_pretrained
    from dass.cli import main
    from dass.models.registry import create_model

    torch.manual_seed(7)
    teacher = create_model("ast_tiny", num_classes=4, embed_dim=32, depth=1, num_heads=2, input_tdim=200)
    save_pretrained(teacher, tmp_path / "teacher")
    logits_file = tmp_path / "teacher_logits.safetensors"
    assert main(["teacher-logits", "--model", str(tmp_path / "teacher"), "--data", str(corpus / "train.json"),
                 "--out", str(logits_file), "--max-length", "200"]) == 0
    live = run_training(base_config(corpus, tmp_path / "live", kd={"teachers": [str(tmp_path / "teacher")]}))
    cached = run_training(base_config(corpus, tmp_path / "cached", kd={"teacher_logits": str(logits_file)}))
    run_training(base_config(corpus, tmp_path / "plain"))
    w_live, w_cached = weights(tmp_path / "live/epochs/epoch_001.safetensors"), weights(tmp_path / "cached/epochs/epoch_001.safetensors")
    assert_same_weights(w_live, w_cached, atol=1e-6)
    assert live["mAP"] == pytest.approx(cached["mAP"], abs=1e-6)
    w_plain = weights(tmp_path / "plain/epochs/epoch_001.safetensors")
    assert max((w_live[k] - w_plain[k]).abs().max().item() for k in w_live) > 1e-4  # KD changed the training


def test_torchrun_two_processes_equal_one(corpus: Path, tmp_path: Path) -> None:
    # mixup + SpecAugment on: their randomness is per item, independent of the process layout
    overrides = dict(augment={"mixup": 0.5, "freqm": 16, "timem": 40})
    run_training(base_config(corpus, tmp_path / "one", **overrides))
    cfg = base_config(corpus, tmp_path / "two", **overrides)
    recipe = tmp_path / "two.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "dass.cli", "train", str(recipe)], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_weights(weights(tmp_path / "one/epochs/epoch_001.safetensors"),
                        weights(tmp_path / "two/epochs/epoch_001.safetensors"), atol=1e-5)
    one, two = (json.loads((tmp_path / d / "final_metrics.json").read_text()) for d in ("one", "two"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["mAP"] == pytest.approx(one["mAP"], abs=1e-4)


def _train_in_subprocess(cfg: dict, resume: bool = False, kill_after_step: int = 0) -> subprocess.CompletedProcess:
    """Train in a fresh process (all runs compared bit-for-bit share the same environment); with
    ``kill_after_step`` the process SIGKILLs itself right after that optimizer step."""
    script = textwrap.dedent(f"""
        import json, os, signal, torch
        torch.set_num_threads(1)
        from dass.train.config import config_from_dict
        from dass.train.trainer import train
        def kill(step):
            if step == {kill_after_step}:
                os.kill(os.getpid(), signal.SIGKILL)
        train(config_from_dict(json.loads({json.dumps(json.dumps(cfg))})), resume={resume}, step_callback=kill)
    """)
    return subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=300)


def test_sigkill_and_resume_equals_uninterrupted(corpus: Path, tmp_path: Path) -> None:
    overrides = dict(augment={"mixup": 0.5, "freqm": 16, "timem": 40}, optim={"epochs": 2},
                     run={"checkpoint_every": 2},
                     model={"name": "ast_tiny", "args": {**AST_MINI, "drop_rate": 0.1}})  # dropout: RNG must resume too
    full = _train_in_subprocess(base_config(corpus, tmp_path / "full", **overrides))
    assert full.returncode == 0, full.stderr[-3000:]
    cfg = base_config(corpus, tmp_path / "killed", **overrides)
    killed = _train_in_subprocess(cfg, kill_after_step=7)  # 3 steps into epoch 2; last checkpoint at step 6
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    state = torch.load(tmp_path / "killed/checkpoints/last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 6)
    assert not (tmp_path / "killed/epochs/epoch_002.safetensors").exists()
    resumed = _train_in_subprocess(cfg, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for epoch in ("001", "002"):
        assert_same_weights(weights(tmp_path / f"full/epochs/epoch_{epoch}.safetensors"),
                            weights(tmp_path / f"killed/epochs/epoch_{epoch}.safetensors"), atol=0.0)
    full_csv, resumed_csv = ((tmp_path / d / "metrics.csv").read_text().splitlines() for d in ("full", "killed"))
    strip_time = lambda rows: [r.rsplit(",", 1)[0] for r in rows]  # noqa: E731 - train_seconds differ
    assert strip_time(full_csv) == strip_time(resumed_csv)  # same losses and metrics, epoch by epoch


def test_teacher_specs_and_ensemble(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    from dass.models.registry import create_model
    from dass.train.teachers import TeacherEnsemble, load_teacher

    torch.manual_seed(0)
    hf = transformers.ASTForAudioClassification(transformers.ASTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_length=64,
        num_labels=4)).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = create_model("ast_tiny", num_classes=4, **{**AST_MINI, "input_tdim": 64})
    save_file(ours.state_dict(), str(tmp_path / "w.safetensors"))
    a = load_teacher(str(tmp_path / "hf"))  # a transformers folder
    b = load_teacher({"model": "ast_tiny", "checkpoint": str(tmp_path / "w.safetensors"),
                      "args": {"num_classes": 4, **AST_MINI, "input_tdim": 64}})
    assert not any(p.requires_grad for p in b.parameters())
    x = torch.randn(2, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(a(x), hf(input_values=x).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(TeacherEnsemble([a, b])(x), (a(x) + ours.eval()(x)) / 2)
    with pytest.raises(ConfigError, match="expected keys model, checkpoint and optional args"):
        load_teacher({"model": "ast_tiny"})


def test_eval_max_clips_scores_the_first_clips_only(corpus: Path, tmp_path: Path) -> None:
    from dass.checkpoints import from_pretrained
    from dass.data.dataset import AudioTaggingDataset
    from dass.train.metrics import compute_metrics

    out = tmp_path / "run"
    result = run_training(base_config(corpus, out, data={"eval_max_clips": 5}))
    model = from_pretrained(out / "final").eval()
    eval_set = AudioTaggingDataset(corpus / "eval.json", max_length=200)
    items = [eval_set[i] for i in range(5)]
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.stack([it["features"] for it in items])))
    expected = compute_metrics(scores, torch.stack([it["targets"] for it in items]))
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    everything = compute_metrics(torch.sigmoid(model(torch.stack([eval_set[i]["features"] for i in range(8)]))).detach(),
                                 torch.stack([eval_set[i]["targets"] for i in range(8)]))
    assert everything["mAP"] != pytest.approx(expected["mAP"], abs=1e-6)  # the cut changes the score
    with pytest.raises(DassError, match="data.eval_max_clips must be >= 1"):
        run_training(base_config(corpus, tmp_path / "bad", data={"eval_max_clips": 0}))
