"""The training loop: AST's recipe (SPEC §6) with optional knowledge distillation (SPEC §5).

``train(config)`` runs in one process or, under ``torchrun``, data-parallel (DDP). Per step: this
process's slice of the global batch → (teacher logits) → loss → Adam step. Per epoch: evaluation on
the eval datafile (mAP, mAUC, d′), the epoch's weights saved for weight averaging, a checkpoint.
At the end the uniform average of the epoch weights from ``optim.wa_start`` on is evaluated and saved
with :func:`dass.checkpoints.save_pretrained` to ``OUTPUT_DIR/final``.

Output folder::

    config.yaml            the resolved configuration
    checkpoints/last.pt    training state (model, optimizer, schedule, scaler, epoch, step, history)
    epochs/epoch_NNN.safetensors   model weights after each epoch (1-based)
    metrics.csv            one row per epoch (+ the averaged model), rewritten atomically
    tensorboard/           TensorBoard events
    final/                 config.json + model.safetensors of the final (averaged) model
    final_metrics.json     metrics of the final model and the training time

Determinism: the data order and every item's augmentation depend only on (seed, epoch, position) (see
:class:`dass.train.distributed.EpochSampler`), and the torch RNG (dropout, drop-path) is re-seeded
from (seed, global step, rank) before every step, so a resumed run repeats the interrupted one exactly
and N processes with batch b/N reproduce one process with batch b (up to float summation order;
with dropout/drop-path > 0 the masks differ between the two layouts).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError, DassError
from .config import OptimConfig, TrainConfig
from .distributed import DistInfo, EpochSampler, ShardSampler, all_gather_objects, barrier, init_distributed
from .tasks import task_loss

__all__ = ["train", "lr_at", "WarmupMultiStep", "evaluate", "average_weights"]

CHECKPOINT = "checkpoints/last.pt"


# ------------------------------------------------------------------------------------ schedule


def lr_at(cfg: OptimConfig, step: int, epoch: int) -> float:
    """Learning rate for 0-based ``step`` (global) in 0-based ``epoch``.

    Linear warm-up ``lr · (step + 1) / warmup_steps`` over the first ``warmup_steps`` steps, times
    ``lr_decay_factor`` per milestone reached: milestones are epochs ``lr_decay_start,
    lr_decay_start + lr_decay_every, ...`` (1-based epoch m's decay applies from epoch m + 1 on, as
    AST's MultiStepLR stepped after each epoch).
    """
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    milestones = 0
    if cfg.lr_decay_every > 0 and epoch >= cfg.lr_decay_start:
        milestones = (epoch - cfg.lr_decay_start) // cfg.lr_decay_every + 1
    return cfg.lr * warm * cfg.lr_decay_factor**milestones


class WarmupMultiStep:
    """Sets the optimizer's learning rate from :func:`lr_at` before each step; its state is the last
    (step, epoch) so a checkpoint records where the schedule is."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> None:
        self.optimizer, self.cfg = optimizer, cfg
        self.step_index, self.epoch = 0, 0

    def set(self, step: int, epoch: int) -> float:
        self.step_index, self.epoch = step, epoch
        lr = lr_at(self.cfg, step, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # the head's multiplier (dass.train.finetune)
        return lr

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step_index, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set(int(state["step"]), int(state["epoch"]))


# ----------------------------------------------------------------------------------- utilities


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_torch(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_bytes(path, buffer.getvalue())


def _save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    _atomic_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in state.items()}))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    _atomic_bytes(path, text.getvalue().encode())


def average_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """Uniform average of the state dicts in ``files`` (float tensors averaged in float64)."""
    from safetensors.torch import load_file

    total: dict[str, torch.Tensor] = {}
    for file in files:
        state = load_file(str(file))
        for k, v in state.items():
            total[k] = total[k] + v.double() if k in total else v.double()
    first = load_file(str(files[0]))
    return {k: (total[k] / len(files)).to(first[k].dtype) if first[k].is_floating_point() else first[k] for k in first}


def metrics_text(metrics: dict[str, float]) -> str:
    """``"mAP 0.4123  mAUC 0.9012  d' 1.912"`` (every metric, d′ with 3 digits)."""
    return "  ".join(f"d' {v:.3f}" if k == "d_prime" else f"{k} {v:.4f}" for k, v in metrics.items())


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, device: torch.device, info: DistInfo, amp: bool,
             task: str = "multilabel", outputs: bool = False) -> Any:
    """The task's metrics over the eval set (each rank scores its shard; rank 0 gets the metrics, with
    ``outputs`` as ``(metrics, scores, targets)``): mAP / mAUC / d′, plus accuracies for single-label."""
    from .tasks import task_metrics, task_scores

    model.eval()
    indices, scores, targets = [], [], []
    for batch in loader:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(batch["features"].to(device, non_blocking=True))
        scores.append(task_scores(logits.float(), task).cpu())
        targets.append(batch["targets"])
        indices.append(batch["index"])
    local = (torch.cat(indices), torch.cat(scores), torch.cat(targets)) if indices else None
    gathered = [g for g in all_gather_objects(local, info) if g is not None]
    if not info.is_main:
        return None
    idx = torch.cat([g[0] for g in gathered])
    order = torch.argsort(idx)
    all_scores, all_targets = torch.cat([g[1] for g in gathered])[order], torch.cat([g[2] for g in gathered])[order]
    metrics = task_metrics(all_scores, all_targets, task)
    return (metrics, all_scores, all_targets) if outputs else metrics


# ------------------------------------------------------------------------------------ training


def _device(cfg: TrainConfig, info: DistInfo) -> torch.device:
    if cfg.run.device == "cuda" or (cfg.run.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("run.device=cuda but no CUDA device is available")
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def _build_student(cfg: TrainConfig, num_classes: int, labels: list[str]) -> nn.Module:
    args = dict(cfg.model.args)
    args.update(num_classes=num_classes, labels=labels)
    if cfg.model.init_from:
        from .finetune import model_from_checkpoint

        return model_from_checkpoint(cfg.model.init_from, **args)
    if cfg.model.init:
        from ..checkpoints import from_pretrained

        return from_pretrained(cfg.model.init, **args)
    from ..models.registry import create_model

    return create_model(cfg.model.name, **args)


def train(config: TrainConfig, resume: bool = False,
          step_callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the final metrics (on rank 0; ``{}`` elsewhere).

    ``step_callback(global_step)`` is called after every optimizer step (and its checkpoint).
    """
    from ..data.dataset import AudioTaggingDataset
    from .teachers import CachedLogits, TeacherEnsemble, load_teacher

    config.validate()
    device_type = "cuda" if config.run.device == "cuda" or (config.run.device == "auto" and torch.cuda.is_available()) else "cpu"
    info = init_distributed(device_type)
    device = _device(config, info)
    out = Path(config.run.output_dir)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise DassError(f"{out} already holds a training checkpoint; pass --resume to continue it or choose another run.output_dir")
    if resume and not ckpt_path.exists():
        raise DassError(f"--resume: no checkpoint at {ckpt_path}")
    if config.optim.batch_size % info.world_size:
        raise ConfigError(f"optim.batch_size {config.optim.batch_size} (global) is not divisible by {info.world_size} processes")
    local_batch = config.optim.batch_size // info.world_size
    amp = config.optim.amp and device.type == "cuda"

    d = config.data
    common = dict(max_length=d.max_length, cache_dir=d.cache_dir, mean=d.mean, std=d.std)
    train_set = AudioTaggingDataset(d.train, d.labels, mixup=config.augment.mixup, freqm=config.augment.freqm,
                                    timem=config.augment.timem, **common)
    eval_set = AudioTaggingDataset(d.eval, d.labels or train_set.label_csv, **common)
    if eval_set.num_classes != train_set.num_classes:
        raise ConfigError(f"{d.eval} and {d.train} use different label lists")
    if d.task == "singlelabel":
        from .tasks import check_single_label

        check_single_label(train_set)
        check_single_label(eval_set)

    torch.manual_seed(config.run.seed)
    model = _build_student(config, train_set.num_classes, train_set.display_names).to(device)

    teacher: nn.Module | None = None
    cached: CachedLogits | None = None
    if config.kd.teachers:
        teacher = TeacherEnsemble([load_teacher(s, device) for s in config.kd.teachers]).eval()
    elif config.kd.teacher_logits:
        cached = CachedLogits(config.kd.teacher_logits)
        if cached.num_classes != train_set.num_classes:
            raise ConfigError(f"{cached.path}: {cached.num_classes} classes, the datafile has {train_set.num_classes}")

    # foreach: the multi-tensor Adam (the same arithmetic with the per-parameter loop in C++ rather
    # than Python; PyTorch picks the Python loop on CPU by default). Its gain is small (see
    # benchmarks/train_step.py, the AST row, where it is the only change).
    from .finetune import parameter_groups

    optimizer = torch.optim.Adam(parameter_groups(model, config.optim.head_lr_multiplier), lr=config.optim.lr,
                                 betas=tuple(config.optim.betas), weight_decay=config.optim.weight_decay, foreach=True)
    schedule = WarmupMultiStep(optimizer, config.optim)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    weights = train_set.sample_weights() if d.balanced_sampling else None
    sampler = EpochSampler(len(train_set), local_batch, info.rank, info.world_size, config.run.seed, weights,
                           d.samples_per_epoch)
    if sampler.steps_per_epoch == 0:
        raise ConfigError(f"{d.train}: {len(train_set)} clips are fewer than one batch of {config.optim.batch_size}")
    loader_kw = dict(num_workers=d.num_workers, pin_memory=device.type == "cuda", generator=torch.Generator())
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=local_batch, sampler=sampler, **loader_kw)
    eval_clips = len(eval_set) if d.eval_max_clips is None else min(d.eval_max_clips, len(eval_set))
    eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=config.run.eval_batch_size,
                                              sampler=ShardSampler(eval_clips, info.rank, info.world_size), **loader_kw)

    epoch, step_in_epoch, global_step, history, train_seconds = 0, 0, 0, [], 0.0
    loss_sum, loss_count = 0.0, 0  # this process's running loss over the current epoch
    if resume:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        history, train_seconds = list(state["history"]), float(state["train_seconds"])
        if info.is_main:  # the stored sums cover all processes; the others restart from 0
            loss_sum, loss_count = float(state["epoch_loss"][0]), int(state["epoch_loss"][1])
    ddp_model: nn.Module = model
    if info.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    writer = None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        import yaml

        _atomic_bytes(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"), purge_step=global_step if resume else None)

    def epoch_loss_totals() -> list[float]:
        """[sum of losses, number of steps] over all processes for the current epoch so far."""
        totals = torch.tensor([loss_sum, float(loss_count)], dtype=torch.float64)
        if info.enabled:
            torch.distributed.all_reduce(totals)
        return totals.tolist()

    def save_checkpoint() -> None:
        epoch_loss = epoch_loss_totals()
        if info.is_main:
            _save_torch(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "history": history, "train_seconds": train_seconds, "world_size": info.world_size,
                "epoch_loss": epoch_loss,
                "sampler": {"seed": config.run.seed, "epoch": epoch, "start_step": step_in_epoch},
            })
        barrier(info)

    from tqdm import tqdm

    kd_weight = config.kd.weight if (teacher is not None or cached is not None) else 0.0
    while epoch < config.optim.epochs:
        sampler.set_epoch(epoch, step_in_epoch)
        ddp_model.train()
        started = time.perf_counter()
        bar = tqdm(total=sampler.steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{config.optim.epochs}",
                   disable=not (info.is_main and config.run.progress), leave=False, dynamic_ncols=True)
        for batch in train_loader:
            torch.manual_seed(config.run.seed * 1_000_003 + global_step * info.world_size + info.rank)
            lr = schedule.set(global_step, epoch)
            features = batch["features"].to(device, non_blocking=True)
            targets = batch["targets"].to(device, non_blocking=True)
            teacher_logits = None
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                if teacher is not None:
                    teacher_logits = teacher(features).float()
                logits = ddp_model(features)
            if cached is not None:
                lam = batch["mix_lambda"].to(torch.float32)[:, None]
                first = cached.lookup([train_set.clips[i].path for i in batch["index"].tolist()])
                second = cached.lookup([train_set.clips[i].path for i in batch["mix_index"].tolist()])
                teacher_logits = (lam * first + (1 - lam) * second).to(device)
            loss = task_loss(logits.float(), targets, d.task, teacher_logits, kd_weight, config.kd.kind,
                             config.kd.temperature)
            if not torch.isfinite(loss):
                raise DassError(f"loss is {loss.item()} at step {global_step} (epoch {epoch + 1}); lower optim.lr?")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            global_step += 1
            step_in_epoch += 1
            loss_sum += loss.item()
            loss_count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            if writer is not None and global_step % max(1, config.run.log_every) == 0:
                writer.add_scalar("train/loss", loss.item(), global_step)
                writer.add_scalar("train/lr", lr, global_step)
            if config.run.checkpoint_every > 0 and global_step % config.run.checkpoint_every == 0:
                train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                save_checkpoint()
            if step_callback is not None:
                step_callback(global_step)
        bar.close()
        train_seconds += time.perf_counter() - started
        totals = epoch_loss_totals()
        metrics = evaluate(model, eval_loader, device, info, amp, d.task)
        if info.is_main:
            row = {"epoch": epoch + 1, "global_step": global_step,
                   "train_loss": totals[0] / max(1.0, totals[1]), "lr": schedule.optimizer.param_groups[0]["lr"],
                   **metrics, "train_seconds": round(train_seconds, 3)}
            history.append(row)
            _write_csv(out / "metrics.csv", history)
            for k in [*metrics, "train_loss"]:
                writer.add_scalar(f"eval/{k}" if k != "train_loss" else "train/epoch_loss", row[k], epoch + 1)
            writer.flush()
            _save_weights(out / "epochs" / f"epoch_{epoch + 1:03d}.safetensors", model.state_dict())
            print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  {metrics_text(metrics)}  ({train_seconds:.0f} s)",
                  flush=True)
        epoch, step_in_epoch, loss_sum, loss_count = epoch + 1, 0, 0.0, 0
        save_checkpoint()

    # weight averaging of the epoch checkpoints from wa_start (1-based) to the end
    barrier(info)
    wa_start = config.optim.wa_start
    if wa_start > 0:
        first = min(wa_start, config.optim.epochs)
        files = [out / "epochs" / f"epoch_{e:03d}.safetensors" for e in range(first, config.optim.epochs + 1)]
        model.load_state_dict(average_weights(files))
    final = evaluate(model, eval_loader, device, info, amp, d.task, outputs=True)
    result: dict[str, Any] = {}
    if info.is_main:
        final_metrics = final[0]
        if d.task == "singlelabel":
            from .tasks import confusion_matrix, plot_confusion

            matrix = confusion_matrix(final[1], final[2].argmax(dim=1), train_set.num_classes)
            plot_confusion(matrix, train_set.display_names, out / "confusion_matrix.png", title=str(d.eval))
        from ..checkpoints import save_pretrained

        save_pretrained(model, out / "final")
        averaged = f"{min(wa_start, config.optim.epochs)}-{config.optim.epochs}" if wa_start > 0 else "none"
        result = {**final_metrics, "weight_average_epochs": averaged, "epochs": config.optim.epochs,
                  "train_seconds": round(train_seconds, 3), "global_steps": global_step,
                  "world_size": info.world_size, "device": str(device),
                  "parameters": sum(p.numel() for p in model.parameters())}
        _write_csv(out / "metrics.csv", history + [{"epoch": "final", "global_step": global_step, **final_metrics,
                                                      "train_seconds": round(train_seconds, 3)}])
        _atomic_bytes(out / "final_metrics.json", (json.dumps(result, indent=2) + "\n").encode())
        for k in final_metrics:
            writer.add_scalar(f"final/{k}", final_metrics[k], config.optim.epochs)
        writer.close()
        print(f"final ({'weight average of epochs ' + averaged if wa_start > 0 else 'last epoch'}): "
              f"{metrics_text(final_metrics)}  -> {out / 'final'}", flush=True)
    barrier(info)
    return result
