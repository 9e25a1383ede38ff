"""The HEAR API (Holistic Evaluation of Audio Representations, hear-eval-kit) for dass encoders.

hear-eval-kit imports a module with three functions; this one serves SSAMBA, SSAST/AST and DASS:

* ``load_model(model_file_path="") -> model``: any checkpoint dass reads (our folders, including
  self-supervised ones from ``dass pretrain``; the authors' SSAMBA ``.pth`` in their self-supervised
  or fine-tuned layout; everything :func:`dass.from_pretrained` accepts). The model has the
  attributes ``sample_rate`` (16000), ``scene_embedding_size`` and ``timestamp_embedding_size``.
* ``get_timestamp_embeddings(audio (n, samples), model) -> (embeddings (n, T, E), timestamps (n, T))``:
  one embedding per time column of the encoder's output, timestamps in **milliseconds** (the centre
  of the column's receptive field), increasing.
* ``get_scene_embeddings(audio (n, samples), model) -> (n, D)``: the encoder's clip embedding.

What the embeddings are:

* SSAMBA and SSAST/AST (patch encoders): the output tokens after the final norm(s), patch tokens
  arranged as the ``F' x T'`` grid; a timestamp embedding is the ``F'`` frequency tokens of one
  time column concatenated (``E = F'·D``, as the authors' s3prl upstream does), at
  ``10·(t·tstride + 7.5) + 12.5`` ms (the centre of the 16-frame patch; frames are 25 ms every
  10 ms). The scene embedding is the model's pooled vector (mean over the patch tokens for
  SSAMBA / SSAST; AST's cls + distillation mean), ``D`` values.
* DASS: the final map ``(C, H', W')``; a timestamp embedding is one column's ``H'`` rows
  concatenated (``E = H'·C``), at the centre of its 32 frames; the scene embedding is the pooled map.

Audio is float32 in [-1, 1] at 16 kHz; features are the models' log-mel fbank, normalised with
``mean`` / ``std`` (AudioSet's by default; :func:`load_model` takes others). Clips are processed in
batches of ``model.batch_size`` in eval mode without gradients, so results do not depend on the
batch: every clip's embeddings equal those of the clip alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import AudioError, CheckpointError
from .features import AUDIOSET_MEAN, AUDIOSET_STD, FeatureExtractor

__all__ = ["HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]

FRAME_SHIFT_MS, FRAME_LENGTH_MS = 10.0, 25.0
DASS_TIME_STRIDE = 32  # frames per column of DASS's final map


class HearModel(nn.Module):
    """An encoder with its front end and the HEAR attributes (``sample_rate``, embedding sizes)."""

    sample_rate = 16000

    def __init__(
        self, encoder: nn.Module, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD, batch_size: int = 16
    ) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.kind = getattr(encoder, "model_type", "")
        if self.kind not in ("ssamba", "ast", "dass"):
            raise CheckpointError(
                f"dass.hear serves SSAMBA, AST/SSAST and DASS encoders, not {self.kind or type(encoder)}"
            )
        self.extractor = FeatureExtractor(sampling_rate=self.sample_rate, max_length=None, mean=mean, std=std)
        self.batch_size = int(batch_size)
        with torch.no_grad():  # the sizes, measured on 1 s of silence
            device = next(encoder.parameters()).device
            scene, per_column = self._encode(torch.zeros(1, 100, self.extractor.num_mel_bins, device=device))
        self.scene_embedding_size = int(scene.shape[-1])
        self.timestamp_embedding_size = int(per_column.shape[-1])

    def features(self, audio: Tensor) -> Tensor:
        """``(n, samples)`` -> normalised log-mel ``(n, frames, bins)``."""
        if audio.dim() != 2 or audio.shape[0] < 1:
            raise AudioError(f"HEAR audio must be a (n_sounds, n_samples) tensor, got shape {tuple(audio.shape)}")
        if not torch.isfinite(audio).all():
            raise AudioError("HEAR audio contains NaN or infinite samples")
        return self.extractor(audio.detach().float().cpu(), sampling_rate=self.sample_rate)["input_values"]

    @torch.no_grad()
    def embed(self, audio: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(scene (n, D), timestamp embeddings (n, T, E), timestamps (n, T) ms)``, on ``audio``'s device."""
        features = self.features(audio)
        device = next(self.encoder.parameters()).device
        scenes, columns = [], []
        for start in range(0, features.shape[0], self.batch_size):
            x = features[start : start + self.batch_size].to(device)
            scene, per_column = self._encode(x)
            scenes.append(scene.float())
            columns.append(per_column.float())
        scene, per_column = torch.cat(scenes), torch.cat(columns)
        times = self._timestamps(features.shape[1], per_column.shape[1])
        times = times.to(per_column)[None].expand(per_column.shape[0], -1).contiguous()
        return scene.to(audio.device), per_column.to(audio.device), times.to(audio.device)

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        e = self.encoder
        if self.kind == "dass":
            fmap = e.forward_features(x)  # (n, C, H', W')
            n, channels, rows, cols = fmap.shape
            return e.pool(fmap), fmap.permute(0, 3, 2, 1).reshape(n, cols, rows * channels)
        if x.shape[1] < e.config.patch_size:
            x = torch.nn.functional.pad(x, (0, 0, 0, e.config.patch_size - x.shape[1]))
        freq, time = e.patch_grid(x.shape[1])
        tokens = e.forward_tokens(e.patch_embed(x.unsqueeze(1).transpose(2, 3)), time)
        patches = tokens[:, e.num_prefix_tokens :].reshape(x.shape[0], freq, time, -1)  # frequency-major grid
        per_column = patches.permute(0, 2, 1, 3).reshape(x.shape[0], time, -1)  # (n, T', F'·D)
        if self.kind == "ssamba":
            scene = e.pool(tokens)
        elif e.config.pooling == "mean":
            scene = tokens[:, 2:].mean(dim=1)
        else:
            scene = (tokens[:, 0] + tokens[:, 1]) / 2
        return scene, per_column

    def _timestamps(self, frames: int, columns: int) -> Tensor:
        """Centre (ms) of each output column's frames."""
        if self.kind == "dass":
            stride, width = DASS_TIME_STRIDE, DASS_TIME_STRIDE
        else:
            stride, width = self.encoder.config.tstride, self.encoder.config.patch_size
        centre_frame = torch.arange(columns, dtype=torch.float64) * stride + (width - 1) / 2
        centre_frame = centre_frame.clamp(max=max(frames - 1, 0))
        return centre_frame * FRAME_SHIFT_MS + FRAME_LENGTH_MS / 2


def _load_encoder(path: Path) -> nn.Module:
    from .checkpoints import from_pretrained, load_state_dict_file
    from .models.ssamba import SSAMBA, authors_key, authors_layout, config_and_state_from_authors, is_authors_state_dict

    if path.is_file() and path.suffix in (".pth", ".pt", ".bin"):
        state = load_state_dict_file(path)
        if is_authors_state_dict(state):
            if authors_layout(state) == "pretrain":
                from .pretrain.checkpoint import ssl_from_authors

                return ssl_from_authors(state, source=str(path)).encoder
            from .checkpoints import load_weights

            config, converted = config_and_state_from_authors(state, source=str(path))
            model = SSAMBA(config)
            load_weights(model, converted, source=str(path), key_name=authors_key)
            return model
    return from_pretrained(path)


def load_model(
    model_file_path: str = "",
    *,
    mean: float = AUDIOSET_MEAN,
    std: float = AUDIOSET_STD,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> HearModel:
    """The HEAR model for a checkpoint (see the module docstring); ``mean`` / ``std``: the fbank statistics."""
    if not model_file_path:
        raise CheckpointError(
            "dass.hear.load_model needs a checkpoint path: a dass folder (dass pretrain / dass train "
            "output, save_pretrained), the authors' SSAMBA .pth, or anything dass.from_pretrained "
            "reads (dass ships no default weights)"
        )
    path = Path(os.fspath(model_file_path)).expanduser()
    if not path.exists():
        raise CheckpointError(f"no such checkpoint file or folder: {path}")
    return HearModel(_load_encoder(path), mean=mean, std=std, batch_size=batch_size).to(device)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """``audio (n, samples)`` -> ``(embeddings (n, T, timestamp_embedding_size), timestamps (n, T) in ms)``."""
    _, per_column, times = model.embed(audio)
    return per_column, times


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """``audio (n, samples)`` -> ``(n, scene_embedding_size)``."""
    return model.embed(audio)[0]
