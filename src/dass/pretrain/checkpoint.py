"""Self-supervised checkpoints: our folder format and the authors' SSAMBA ``.pth`` layout, both ways.

Our format (what ``dass pretrain`` writes to ``OUTPUT_DIR/final`` and ``OUTPUT_DIR/best``) is a
:func:`dass.checkpoints.save_pretrained` folder of the *encoder* plus the pretraining heads::

    config.json              the encoder's config (model_type ssamba | ast; strides = patch size)
    model.safetensors        the encoder's weights (its mlp_head is an untrained placeholder)
    ssl_heads.safetensors    mask_embed, cpredlayer.{0,2}.*, gpredlayer.{0,2}.*

so ``dass.from_pretrained(folder)`` loads the encoder like any model, and ``dass train`` fine-tunes
it with ``model.init_from: folder`` (:mod:`dass.train.finetune`).

The authors' self-supervised layout (SSAMBA, ``docs/ssamba.md``): one ``.pth`` holding
``DataParallel(AMBAModel).state_dict()``: ``module.p_input_fdim``, ``module.p_input_tdim``,
``module.mask_embed``, ``module.v.*`` (the encoder), ``module.cpredlayer.*``,
``module.gpredlayer.*``. :func:`export_authors` writes it from our folder (SSAMBA encoders only; the
SSAST authors' layout is not implemented); :func:`load_ssl` / :func:`import_authors` read it back
(the table and weights unchanged: ``export`` then ``import`` gives identical tensors).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from .model import SSL_HEAD_PREFIXES, MaskedPatchModel

__all__ = [
    "SSL_HEADS_NAME",
    "export_authors",
    "import_authors",
    "is_ssl_folder",
    "load_ssl",
    "save_ssl",
    "ssl_from_authors",
]

SSL_HEADS_NAME = "ssl_heads.safetensors"


def save_ssl(model: MaskedPatchModel, directory: str | os.PathLike) -> Path:
    """Write ``model`` (encoder folder + ``ssl_heads.safetensors``) into ``directory``; each file atomically."""
    from safetensors.torch import save

    from ..checkpoints import save_pretrained
    from ..train.trainer import _atomic_bytes

    directory = save_pretrained(model.encoder, directory)
    heads = {k: v.detach().cpu().contiguous() for k, v in model.ssl_heads().items()}
    _atomic_bytes(directory / SSL_HEADS_NAME, save(heads))
    return directory


def is_ssl_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by :func:`save_ssl`."""
    return Path(path).is_dir() and (Path(path) / SSL_HEADS_NAME).is_file()


def _ssl_model(encoder: torch.nn.Module, heads: dict[str, Tensor], source: str) -> MaskedPatchModel:
    model = MaskedPatchModel(encoder)
    model.load_ssl_heads(heads, source=source)
    return model


def ssl_from_authors(state_dict: dict[str, Tensor], source: str = "checkpoint") -> MaskedPatchModel:
    """The authors' self-supervised SSAMBA state dict -> our :class:`MaskedPatchModel`, at its pretraining
    geometry (``p_input_fdim`` x ``p_input_tdim``, strides = patch size) with the table unchanged."""
    from ..checkpoints import load_weights
    from ..models.ssamba import (
        SSAMBA,
        authors_key,
        authors_layout,
        config_and_state_from_authors,
        is_authors_state_dict,
    )

    if not is_authors_state_dict(state_dict) or authors_layout(state_dict) != "pretrain":
        raise CheckpointError(
            f"{source}: not a self-supervised SSAMBA checkpoint of the authors' layout "
            "(module.p_input_fdim, module.mask_embed, module.v.*, module.cpredlayer.*, ...)"
        )
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    patch = int(state["v.patch_embed.proj.weight"].shape[-1])
    fdim, tdim = int(state["p_input_fdim"].item()), int(state["p_input_tdim"].item())
    config, encoder_state = config_and_state_from_authors(
        state_dict, fstride=patch, tstride=patch, input_fdim=fdim, input_tdim=tdim, num_classes=1, source=source
    )
    encoder_state["pos_embed"] = state["v.pos_embed"]  # same grid: no adaptation at all
    encoder = SSAMBA(config)
    load_weights(encoder, encoder_state, source=source, key_name=authors_key)
    heads = {k: v for k, v in state.items() if k.startswith(SSL_HEAD_PREFIXES)}
    return _ssl_model(encoder, heads, source)


def load_ssl(path: str | os.PathLike) -> MaskedPatchModel:
    """A pretraining model from our folder (:func:`save_ssl`) or the authors' self-supervised ``.pth``."""
    from safetensors.torch import load_file

    from ..checkpoints import from_pretrained, load_state_dict_file

    path = Path(path)
    if path.is_dir():
        if not is_ssl_folder(path):
            raise CheckpointError(
                f"{path}: not a self-supervised checkpoint folder (no {SSL_HEADS_NAME}); write one with dass pretrain"
            )
        encoder = from_pretrained(path)
        try:
            heads = load_file(str(path / SSL_HEADS_NAME))
        except Exception as e:  # noqa: BLE001 - safetensors' own error types
            raise CheckpointError(f"{path / SSL_HEADS_NAME}: not a readable safetensors file ({e})") from None
        return _ssl_model(encoder, heads, str(path / SSL_HEADS_NAME))
    return ssl_from_authors(load_state_dict_file(path), source=str(path))


def export_authors(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Our self-supervised SSAMBA folder ``src`` -> the authors' ``.pth`` ``dst`` (written atomically)."""
    from ..models.ssamba import state_dict_to_authors
    from ..train.trainer import _atomic_bytes

    dst = Path(dst)
    if dst.suffix not in (".pth", ".pt"):
        raise ConfigError(f"an authors'-format checkpoint is a .pth file; got {dst}")
    model = load_ssl(src)
    if getattr(model.encoder, "model_type", None) != "ssamba":
        raise ConfigError(
            f"{src}: the authors' self-supervised layout is implemented for SSAMBA encoders only; "
            f"this one is {getattr(model.encoder, 'model_type', type(model.encoder).__name__)}"
        )
    encoder_state = model.encoder.state_dict()
    authors = state_dict_to_authors(encoder_state, model.encoder.config, layout="pretrain", ssl_heads=model.ssl_heads())
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in authors.items()}, buffer)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _atomic_bytes(dst, buffer.getvalue())
    return dst


def import_authors(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """The authors' self-supervised SSAMBA ``.pth`` ``src`` -> our folder ``dst``."""
    return save_ssl(load_ssl(src), dst)
