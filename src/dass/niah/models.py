"""Models for NIAH: anything that maps normalised features ``(B, T, 128)`` to logits ``(B, classes)``.

``--model [LABEL=]SPEC`` with SPEC one of:

* a registered name, optionally with weights: ``dass_small``, ``ast_tiny@run/weights.safetensors``
  (a state dict in safetensors, or a pickle loaded with ``weights_only=True``); no weights = random
  weights (for timing and smoke tests), with a head sized by ``num_classes``;
* a checkpoint :func:`dass.checkpoints.from_pretrained` reads: our folder, a Hugging Face DASS folder
  or hub id, the authors' ``.pth``, the official AST checkpoint;
* a Hugging Face transformers folder with an ``AutoModelForAudioClassification`` on fbank features
  (e.g. ``ASTForAudioClassification``), or any folder forced with the ``hf:`` prefix. It keeps its
  fixed positions: other lengths than ``config.max_length`` get "max positions exceeded";
* ``hf-ast:FOLDER``: a transformers ``ASTForAudioClassification`` converted to dass's AST (same
  weights and logits at its length), whose learned positional embeddings are interpolated along time
  for any length.

LABEL names the model in the CSV (default: the registered name or the folder/file name).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

OUR_MODEL_TYPES = ("dass", "ast")


class MaxPositionsExceeded(ValueError):
    """A model with a fixed number of positions was given a longer input."""


class HFAudioClassifier(nn.Module):
    """A transformers ``AutoModelForAudioClassification`` taking our normalised ``(B, T, 128)`` features.

    AST-style models (``ASTForAudioClassification``) read exactly the features dass computes (same
    fbank, same AudioSet normalisation, ``input_values`` of shape ``(B, T, 128)``). Their positional
    embeddings are fixed to ``config.max_length`` frames: any other length raises
    :class:`MaxPositionsExceeded` instead of a shape error from deep inside the model.
    """

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.max_length: int | None = getattr(hf_model.config, "max_length", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, 128)`` -> ``(B, num_labels)`` logits."""
        if self.max_length is not None and x.shape[1] != self.max_length:
            raise MaxPositionsExceeded(f"max positions exceeded: the model takes exactly {self.max_length} "
                                       f"frames (positional embeddings), got {x.shape[1]}")
        return self.hf_model(input_values=x).logits


def load_hf_audio_classifier(path: str | os.PathLike) -> HFAudioClassifier:
    """Load a local transformers folder with ``AutoModelForAudioClassification`` (no network)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: not a folder with a transformers model (config.json + weights)")
    try:
        from transformers import AutoModelForAudioClassification
    except ImportError as e:  # pragma: no cover - transformers is a test dependency
        raise CheckpointError(f"{path}: Hugging Face models need `pip install dass[hf]` ({e})") from e
    try:
        hf_model = AutoModelForAudioClassification.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot load with AutoModelForAudioClassification: {e}") from e
    main_input = getattr(hf_model, "main_input_name", "input_values")
    bins = getattr(hf_model.config, "num_mel_bins", None)
    if main_input != "input_values" or bins not in (None, 128):
        raise CheckpointError(f"{path}: {type(hf_model).__name__} does not take 128-bin fbank features "
                              f"(main input {main_input!r}, num_mel_bins={bins}); NIAH feeds fbank features")
    return HFAudioClassifier(hf_model)


def _registered_with_weights(name: str, weights: str | None, num_classes: int | None = None) -> nn.Module:
    from ..models.registry import create_model

    if weights is None:
        return create_model(name, **({"num_classes": num_classes} if num_classes is not None else {}))
    from ..checkpoints import load_state_dict_file

    state = load_state_dict_file(weights)
    model = create_model(name)
    default_classes = model.config.num_classes
    for key, value in model.state_dict().items():  # size the head from the weights
        if value.dim() >= 1 and value.shape[0] == default_classes and key in state \
                and state[key].dim() == value.dim() and state[key].shape[1:] == value.shape[1:] \
                and state[key].shape[0] != default_classes:
            model = create_model(name, num_classes=state[key].shape[0])
            break
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: does not fit model {name!r}: {e}") from e
    return model


def _folder_model_type(path: Path) -> str | None:
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_type")
    except (ValueError, AttributeError) as e:
        raise CheckpointError(f"{config}: not a JSON object: {e}") from e


def load_niah_model(spec: str, device: torch.device | str = "cpu",
                    num_classes: int | None = None) -> tuple[str, nn.Module]:
    """Parse ``[LABEL=]SPEC`` (see the module docstring) -> (label, model in eval mode on ``device``).

    ``num_classes`` sizes the head of a registered name without weights (random: timing, smoke tests).
    """
    from ..models.registry import list_models

    label, sep, target = spec.partition("=")
    if not sep:
        label, target = "", spec
    label, target = label.strip(), target.strip()
    if not target:
        raise ConfigError(f"empty model in --model {spec!r}")
    name, _, weights = target.partition("@")
    if name in list_models():
        model = _registered_with_weights(name, weights or None, num_classes)
        default_label = name
    elif target.startswith("hf-ast:"):
        from ..models.ast import from_hf_ast

        model = from_hf_ast(target[len("hf-ast:"):])
        default_label = Path(target[len("hf-ast:"):]).name
    elif target.startswith("hf:"):
        model = load_hf_audio_classifier(target[3:])
        default_label = Path(target[3:]).name
    else:
        path = Path(target)
        model_type = _folder_model_type(path) if path.is_dir() else None
        if path.is_dir() and model_type is not None and model_type not in OUR_MODEL_TYPES:
            model = load_hf_audio_classifier(path)
        else:
            from ..checkpoints import from_pretrained

            model = from_pretrained(target)
        default_label = path.name or target
    return label or default_label, model.to(device).eval()
