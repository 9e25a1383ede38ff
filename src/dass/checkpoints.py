"""Loading, saving and converting checkpoints in every layout dass knows (SPEC §3).

Layouts of a state dict (see :func:`detect_layout`):

* ``"dass"``: ours, written by :func:`save_pretrained` -- ``config.json`` (``model.config.to_dict()``,
  with ``model_type`` and ``labels``) + ``model.safetensors``. For DASS the keys are the authors'
  keys without ``module.v.`` (``patch_embed.0.weight``, ``layers.0.blocks.0.op.A_logs``, ...).
* ``"authors"``: the authors' training code, ``torch.save(DataParallel(model).state_dict())``: the same
  keys prefixed with ``module.v.`` (no config: depths, dims and classes are read off the shapes).
* ``"hf"``: the Hugging Face release (``config.json`` with ``model_type: "dass"``, ``depths``, ``dims``,
  ``num_classes``, ``id2label`` + ``model.safetensors`` or ``pytorch_model.bin``) with ``dass.*`` /
  ``head.*`` keys; see :func:`state_dict_from_hf_dass` for the renames.
* ``"ast_official"``: the official AST AudioSet checkpoint (``module.v.cls_token``, ...), converted by
  :func:`dass.models.ast.config_and_state_from_official`.

Pickled files are always read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import CheckpointError, ConfigError

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "convert",
    "dass_config_from_hf",
    "dass_config_from_state_dict",
    "dass_config_to_hf",
    "detect_layout",
    "from_pretrained",
    "load_checkpoint",
    "load_state_dict_file",
    "load_weights",
    "resolve_checkpoint",
    "save_pretrained",
    "state_dict_from_authors",
    "state_dict_from_hf_dass",
    "state_dict_to_authors",
    "state_dict_to_hf_dass",
    "hf_key_from_ours",
    "our_key_from_hf",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HF_WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
AUTHORS_PREFIX = "module.v."
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MAX_LISTED = 12  # keys listed per category in a mismatch message


# ------------------------------------------------------------------------------------ file reading


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a pickle (``torch.load(weights_only=True)``).

    A pickle holding ``{"model": state_dict, ...}`` or ``{"state_dict": ...}`` (VMamba, Lightning) is
    unwrapped. Raises :class:`CheckpointError` naming the file if it is missing, unreadable, or not a
    mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: cannot read checkpoint with torch.load(weights_only=True) ({reason}); "
            "expected a state dict saved with torch.save or a .safetensors file"
        ) from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for wrapper in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a non-empty dict of tensors, got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors (keys: {_preview(list(obj))})")
    return tensors


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read JSON config ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


# ---------------------------------------------------------------------------------------- layouts


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """Which layout a state dict is in: ``"dass"``, ``"authors"``, ``"hf"``, ``"ast_official"`` or ``"unknown"``.

    ``"dass"`` means keys without prefix (ours, or a bare VMamba-style dict); it says nothing about
    the architecture, which the accompanying ``config.json`` gives.
    """
    keys = set(state_dict)
    if "module.v.cls_token" in keys or "v.cls_token" in keys:
        return "ast_official"
    if any(k.startswith(AUTHORS_PREFIX) for k in keys):
        return "authors"
    if any(k.startswith("dass.") for k in keys):
        return "hf"
    if keys:
        return "dass"
    return "unknown"


def state_dict_from_authors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Authors' ``module.v.*`` keys -> ours (strip the prefix). Keys without it raise CheckpointError."""
    stray = [k for k in state_dict if not k.startswith(AUTHORS_PREFIX)]
    if stray:
        raise CheckpointError(
            f"keys without the {AUTHORS_PREFIX!r} prefix in an authors' checkpoint: {_preview(stray)}"
        )
    return {k[len(AUTHORS_PREFIX):]: v for k, v in state_dict.items()}


def state_dict_to_authors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our DASS keys -> the authors' (``module.v.`` prefix)."""
    return {AUTHORS_PREFIX + k: v for k, v in state_dict.items()}


# our stem index <-> Hugging Face `patch_embeddings.projection` index (conv, LN, conv, LN)
_STEM_TO_HF = {"0": "0", "2": "1", "5": "3", "7": "4"}
_STEM_FROM_HF = {v: k for k, v in _STEM_TO_HF.items()}
_DIRECTIONS = 4


def hf_key_from_ours(key: str) -> str:
    """The Hugging Face release's name of one of our DASS keys (see :func:`state_dict_to_hf_dass`)."""
    if key.startswith("patch_embed."):
        _, index, rest = key.split(".", 2)
        return f"dass.patch_embeddings.projection.{_STEM_TO_HF.get(index, index)}.{rest}"
    if key.startswith("classifier.head."):
        return key[len("classifier."):]
    if key.startswith("classifier.norm."):
        return "dass." + key[len("classifier."):]
    key = key.replace(".op.x_proj_weight", ".op.x_proj.weight").replace(".op.dt_projs_weight", ".op.dt_projs.weight")
    key = key.replace(".downsample.1.", ".downsample.down.").replace(".downsample.3.", ".downsample.norm.")
    return "dass." + key


def our_key_from_hf(key: str) -> str:
    """Our name of a Hugging Face DASS key (inverse of :func:`hf_key_from_ours`).

    Keys outside the HF layout come back unchanged (so that loading reports them as unexpected).
    """
    if key.startswith("head."):
        return "classifier." + key
    if not key.startswith("dass."):
        return key
    key = key[len("dass."):]
    if key.startswith("patch_embeddings.projection.") and key.count(".") >= 3:
        index, rest = key[len("patch_embeddings.projection."):].split(".", 1)
        if index not in _STEM_FROM_HF:
            return "dass." + key
        return f"patch_embed.{_STEM_FROM_HF[index]}.{rest}"
    if key.startswith("norm."):
        return "classifier." + key
    key = key.replace(".op.x_proj.weight", ".op.x_proj_weight").replace(".op.dt_projs.weight", ".op.dt_projs_weight")
    return key.replace(".downsample.down.", ".downsample.1.").replace(".downsample.norm.", ".downsample.3.")


def _is_direction_stacked(key: str) -> bool:
    return key.endswith((".op.x_proj_weight", ".op.dt_projs_weight"))


def state_dict_to_hf_dass(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our DASS keys -> the Hugging Face release's keys (SPEC §3b).

    ``patch_embed.{0,2,5,7}`` -> ``dass.patch_embeddings.projection.{0,1,3,4}``;
    ``…op.x_proj_weight (4, R+2N, C)`` -> ``…op.x_proj.weight (4(R+2N), C)``;
    ``…op.dt_projs_weight (4, C, R)`` -> ``…op.dt_projs.weight (4C, R)``;
    ``layers.i.downsample.{1,3}`` -> ``…downsample.{down,norm}``; ``classifier.norm`` -> ``dass.norm``;
    ``classifier.head`` -> ``head``; every other key gets the ``dass.`` prefix.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if _is_direction_stacked(key) and value.dim() == 3:
            value = value.reshape(-1, value.shape[-1])
        out[hf_key_from_ours(key)] = value
    return out


def state_dict_from_hf_dass(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Hugging Face release's ``dass.*`` / ``head.*`` keys -> ours (inverse of :func:`state_dict_to_hf_dass`).

    ``x_proj.weight`` and ``dt_projs.weight`` are accepted flat (``(4(R+2N), C)``, ``(4C, R)``) or
    already split into the 4 directions; a flat tensor that cannot be split is passed on unchanged
    (and reported as mis-shaped when loaded).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        ours = our_key_from_hf(key)
        if _is_direction_stacked(ours) and value.dim() == 2 and value.shape[0] % _DIRECTIONS == 0:
            value = value.reshape(_DIRECTIONS, -1, value.shape[-1])
        out[ours] = value
    return out


def _labels_from_id2label(id2label: Any, num_classes: int) -> list[str] | None:
    """Class names ordered by index from an ``id2label`` mapping, or None if it does not name every class."""
    if not isinstance(id2label, dict) or len(id2label) != num_classes:
        return None
    try:
        by_index = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(by_index) != list(range(num_classes)):
        return None
    labels = [by_index[i] for i in range(num_classes)]
    if all(name == f"LABEL_{i}" for i, name in enumerate(labels)):  # transformers' placeholder names
        return None
    return labels


def dass_config_from_hf(cfg: dict[str, Any]):
    """A :class:`~dass.models.dass.DASSConfig` from a Hugging Face DASS ``config.json`` dict.

    Reads ``depths``, ``dims`` (a list, or an int meaning ``dims * 2**i``), ``num_classes``,
    ``drop_path_rate`` and the class names from ``id2label``; the other HF fields (``max_length``,
    ``num_mel_bins``, ``use_checkpoint``, ...) do not change the network. Raises ConfigError for a
    config the released network code would build differently (``patch_size`` != 4, ``embed_dim`` != dims[0]).
    """
    from .models.dass import DASSConfig

    if cfg.get("model_type") != "dass":
        raise ConfigError(f"not a Hugging Face DASS config: model_type is {cfg.get('model_type')!r}, expected 'dass'")
    depths = [int(d) for d in cfg.get("depths", (2, 2, 8, 2))]
    dims = cfg.get("dims", (96, 192, 384, 768))
    if isinstance(dims, int):
        dims = [dims * 2**i for i in range(len(depths))]
    dims = [int(d) for d in dims]
    if int(cfg.get("patch_size", 4)) != 4:
        raise ConfigError(f"Hugging Face DASS config: patch_size {cfg['patch_size']} is not supported (only 4)")
    if "embed_dim" in cfg and int(cfg["embed_dim"]) != dims[0]:
        raise ConfigError(f"Hugging Face DASS config: embed_dim {cfg['embed_dim']} differs from dims[0] = {dims[0]}")
    id2label = cfg.get("id2label")
    num_classes = int(cfg.get("num_classes", len(id2label) if isinstance(id2label, dict) and id2label else 527))
    return DASSConfig(
        depths=tuple(depths),
        dims=tuple(dims),
        num_classes=num_classes,
        drop_path_rate=float(cfg.get("drop_path_rate", 0.2)),
        labels=_labels_from_id2label(cfg.get("id2label"), num_classes),
    )


def _hf_preprocessor_config() -> dict[str, Any]:
    """The ``preprocessor_config.json`` of a Hugging Face DASS folder (SPEC §1 front end)."""
    from .features import AUDIOSET_MEAN, AUDIOSET_STD

    return {
        "feature_extractor_type": "DASSFeatureExtractor", "feature_size": 1, "sampling_rate": 16000,
        "num_mel_bins": 128, "max_length": 1024, "padding_value": 0.0, "padding_side": "right",
        "do_normalize": True, "mean": AUDIOSET_MEAN, "std": AUDIOSET_STD, "return_attention_mask": False,
    }


def dass_config_to_hf(config) -> dict[str, Any]:
    """A Hugging Face DASS ``config.json`` dict for a :class:`DASSConfig` (inverse of :func:`dass_config_from_hf`).

    Raises ConfigError for settings the released HF network cannot express (pooling other than mean,
    d_state, ssm_ratio, mlp_ratio or dt_rank other than the released values).
    """
    fixed = {"pooling": "mean", "d_state": 1, "ssm_ratio": 1.0, "mlp_ratio": 4.0, "dt_rank": "auto"}
    differing = [f"{name}={getattr(config, name)!r}" for name, value in fixed.items() if getattr(config, name) != value]
    if differing:
        raise ConfigError(
            f"the Hugging Face DASS format cannot express {', '.join(differing)} "
            f"(it always uses {', '.join(f'{k}={v!r}' for k, v in fixed.items())})"
        )
    labels = config.labels or [f"LABEL_{i}" for i in range(config.num_classes)]
    return {
        "model_type": "dass",
        "architectures": ["DASSForAudioClassification"],
        "patch_size": 4,
        "embed_dim": config.dims[0],
        "depths": list(config.depths),
        "dims": list(config.dims),
        "drop_path_rate": config.drop_path_rate,
        "num_classes": config.num_classes,
        "max_length": 1024,
        "num_mel_bins": 128,
        "use_checkpoint": False,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def _named_preset_drop_path(depths: tuple[int, ...], dims: tuple[int, ...]) -> float:
    """The drop-path rate of the named config with these depths/dims (0.0 if none): training only."""
    from .models.dass import NAMED_CONFIGS

    for preset in NAMED_CONFIGS.values():
        if tuple(preset["depths"]) == depths and tuple(preset["dims"]) == dims:
            return float(preset["drop_path_rate"])
    return 0.0


def dass_config_from_state_dict(state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint"):
    """Infer a :class:`DASSConfig` from DASS weights in our key layout (depths, dims, classes, N, ratios).

    Used for the authors' ``.pth`` files, which carry no config. Raises CheckpointError if the keys
    needed to read the architecture off the shapes are missing.
    """
    from .models.dass import DASSConfig

    depths_by_stage: dict[int, int] = {}
    for key in state_dict:
        match = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths_by_stage[stage] = max(depths_by_stage.get(stage, 0), block + 1)
    num_stages = len(depths_by_stage)
    if num_stages == 0 or sorted(depths_by_stage) != list(range(num_stages)):
        raise CheckpointError(f"{source}: cannot read the DASS stages off the keys (expected layers.i.blocks.j.*; "
                              f"got {_preview(sorted(state_dict))})")
    first = "layers.0.blocks.0"
    needed = [f"layers.{i}.blocks.0.norm.weight" for i in range(num_stages)] + [
        f"{first}.op.A_logs", f"{first}.op.x_proj_weight", f"{first}.op.in_proj.weight",
        f"{first}.mlp.fc1.weight", "classifier.head.weight",
    ]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise CheckpointError(f"{source}: not a DASS checkpoint, missing {_preview(missing)}")
    dims = tuple(int(state_dict[f"layers.{i}.blocks.0.norm.weight"].shape[0]) for i in range(num_stages))
    depths = tuple(depths_by_stage[i] for i in range(num_stages))
    d_state = int(state_dict[f"{first}.op.A_logs"].shape[1])
    dt_rank = int(state_dict[f"{first}.op.x_proj_weight"].shape[1]) - 2 * d_state
    return DASSConfig(
        depths=depths,
        dims=dims,
        num_classes=int(state_dict["classifier.head.weight"].shape[0]),
        drop_path_rate=_named_preset_drop_path(depths, dims),
        d_state=d_state,
        ssm_ratio=state_dict[f"{first}.op.in_proj.weight"].shape[0] / dims[0],
        mlp_ratio=state_dict[f"{first}.mlp.fc1.weight"].shape[0] / dims[0],
        dt_rank="auto" if dt_rank == math.ceil(dims[0] / 16) else dt_rank,
    )


# ------------------------------------------------------------------------------ loading into a model


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {item}" for item in shown) + more


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint",
                 key_name: Callable[[str], str] | None = None) -> None:
    """Copy ``state_dict`` into ``model`` strictly; any mismatch raises one readable CheckpointError.

    The message lists the missing keys, the unexpected keys and the mis-shaped keys (checkpoint shape
    vs model shape) and names ``source``. ``key_name`` turns a model key into the name the file uses
    (e.g. adds ``module.v.``), so the message speaks the file's language.
    """
    name = key_name or (lambda k: k)
    expected = model.state_dict()
    missing = [name(k) for k in expected if k not in state_dict]
    unexpected = [name(k) for k in state_dict if k not in expected]
    misshaped = [
        f"{name(k)}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = [_listing(title, items) for title, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped)) if items]
        kind = getattr(model, "model_type", type(model).__name__)
        raise CheckpointError(f"{source} does not fit the {kind} model:\n" + "\n".join(parts))
    model.load_state_dict(state_dict, strict=True)


# ------------------------------------------------------------------------------ resolving a source


def _is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.endswith(CHECKPOINT_SUFFIXES)


def resolve_checkpoint(path_or_hub_id: str | os.PathLike) -> Path:
    """A local path for a checkpoint: the path itself, or a Hub snapshot for an ``owner/name`` id.

    Hub ids are fetched with ``huggingface_hub.snapshot_download`` (config + weights only; cached).
    Offline or on a network failure this raises CheckpointError saying how to pass a local path.
    """
    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        return path
    text = str(path_or_hub_id)
    if not _is_hub_id(text):
        raise CheckpointError(f"no such checkpoint file or folder: {text}")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(text, allow_patterns=["*.json", "model.safetensors", "pytorch_model.bin"])
    except Exception as e:  # offline mode, no network, unknown repo, HTTP errors ...
        reason = " ".join(str(e).split()).split(". ")[0][:200] or "no details"
        raise CheckpointError(
            f"cannot fetch {text!r} from the Hugging Face Hub ({type(e).__name__}: {reason}). "
            f"Without network access, download it on a connected machine "
            f"(`hf download {text} --local-dir SOME_DIR`), copy SOME_DIR here and pass that "
            "local folder instead of the hub id (e.g. `--model SOME_DIR`); a checkpoint file "
            "(.pth / .safetensors / .bin) works too. (A local path that does not exist is taken "
            "for a hub id: check its spelling.)"
        ) from None
    return Path(local)


def _weights_in_folder(folder: Path) -> Path:
    for name in HF_WEIGHTS_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in sorted(folder.iterdir())) or "nothing"
    raise CheckpointError(
        f"{folder}: no weights found (expected {' or '.join(HF_WEIGHTS_NAMES)}, or a single "
        f"{'/'.join(CHECKPOINT_SUFFIXES)} file); the folder holds: {found}"
    )


def _ast_from_official(
    state_dict: dict[str, torch.Tensor], source: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        from .models.ast import config_and_state_from_official
    except ImportError:
        raise CheckpointError(
            f"{source} is an official AST checkpoint, but this installation has no AST converter "
            "(dass.models.ast.config_and_state_from_official)"
        ) from None
    return config_and_state_from_official(state_dict)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a local checkpoint file or folder in any layout: ``(config dict with model_type, state dict)``.

    The state dict is in the layout of our model classes (ready for :func:`load_weights`).
    """
    config, state, _, _ = _load_checkpoint(Path(path))
    return config, state


def _load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str, Callable[[str], str]]:
    """:func:`load_checkpoint` plus the weights file's name and a function naming our keys as the file does."""
    if path.is_file() and path.name == CONFIG_NAME:
        path = path.parent
    config_json: dict[str, Any] | None = None
    if path.is_dir():
        weights = _weights_in_folder(path)
        if (path / CONFIG_NAME).is_file():
            config_json = _read_json(path / CONFIG_NAME)
    else:
        weights = path
    state = load_state_dict_file(weights)
    layout = detect_layout(state)
    source = str(weights)

    if layout == "ast_official":
        config, state = _ast_from_official(state, source)
        return config, state, source, lambda k: k
    if layout == "authors":
        state = state_dict_from_authors(state)
        config = dass_config_from_state_dict(state, source=source).to_dict()
        return config, state, source, lambda k: AUTHORS_PREFIX + k
    if layout == "hf":
        file_names = {our_key_from_hf(k): k for k in state}
        state = state_dict_from_hf_dass(state)
        if config_json is not None:
            try:
                config = dass_config_from_hf(config_json).to_dict()
            except ConfigError as e:
                raise CheckpointError(f"{path / CONFIG_NAME}: {e}") from None
        else:
            config = dass_config_from_state_dict(state, source=source).to_dict()
        return config, state, source, lambda k: file_names.get(k) or hf_key_from_ours(k)
    # our layout (or a bare DASS state dict without config)
    if config_json is not None:
        if "model_type" not in config_json:
            raise CheckpointError(f"{path / CONFIG_NAME}: no 'model_type' key; cannot tell which network it describes")
        return config_json, state, source, lambda k: k
    return dass_config_from_state_dict(state, source=source).to_dict(), state, source, lambda k: k


def _keep_fresh_head(state: dict[str, torch.Tensor], old_classes: int, model: nn.Module) -> None:
    """Replace checkpoint tensors sized for ``old_classes`` (the head) by the re-sized model's fresh ones."""
    expected = model.state_dict()
    for key in list(state):
        if key in expected and state[key].dim() >= 1 and state[key].shape[0] == old_classes \
                and tuple(state[key].shape) != tuple(expected[key].shape):
            state[key] = expected[key]  # keep the fresh initialisation


def from_pretrained(
    path_or_hub_id: str | os.PathLike, *, device: str | torch.device = "cpu", **overrides: Any
) -> nn.Module:
    """Load a model (in eval mode, on ``device``) from a checkpoint in any layout dass knows.

    ``path_or_hub_id``: our saved folder, a Hugging Face DASS folder or hub id (``owner/name``), the
    authors' ``.pth`` (``module.v.*``), the official AST checkpoint, or a bare state-dict file.
    ``overrides`` replace config fields (e.g. ``pooling="first"``, ``drop_path_rate=0.1``,
    ``labels=[...]``). A different ``num_classes`` keeps the network but starts a freshly initialised
    classification head (for fine-tuning); its labels are dropped unless ``labels`` is given.
    """
    from .models.registry import build_from_config

    local = resolve_checkpoint(path_or_hub_id)
    config, state, source, key_name = _load_checkpoint(local)
    config = dict(config)
    old_classes = config.get("num_classes")
    if "num_classes" in overrides and overrides["num_classes"] != old_classes and "labels" not in overrides:
        config["labels"] = None
    config.update(overrides)
    try:
        model = build_from_config(config)
    except ConfigError as e:
        raise CheckpointError(f"{local}: {e}") from None
    if old_classes is not None and config.get("num_classes") != old_classes:
        _keep_fresh_head(state, old_classes, model)
    load_weights(model, state, source=source, key_name=key_name)
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------ saving


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")

    _atomic_write(path, write)


def _write_safetensors(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` (``model.config.to_dict()``, incl. model_type and labels) and
    ``model.safetensors`` into ``directory`` (created if needed; each file written atomically)."""
    directory = Path(directory)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ConfigError(f"{type(model).__name__} has no config with to_dict(); cannot save it")
    config_dict = config.to_dict()
    config_dict.setdefault("model_type", getattr(model, "model_type", None))
    directory.mkdir(parents=True, exist_ok=True)
    _write_safetensors(directory / WEIGHTS_NAME, model.state_dict())
    _write_json(directory / CONFIG_NAME, config_dict)
    return directory


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, format: str = "dass",
            labels: list[str] | None = None) -> Path:
    """Convert a checkpoint (any layout :func:`from_pretrained` reads) to ``dst``.

    ``format``: ``"dass"`` (our folder, default), ``"hf"`` (a Hugging Face DASS folder: config.json
    + model.safetensors with ``dass.*`` keys) or ``"authors"`` (a ``.pth`` file with ``module.v.*``
    keys). ``labels`` (class names by index) are stored in the config (not in ``"authors"`` files).
    """
    if format not in ("dass", "hf", "authors"):
        raise ConfigError(f"unknown checkpoint format {format!r}; choose dass, hf or authors")
    overrides = {"labels": labels} if labels is not None else {}
    model = from_pretrained(src, **overrides)
    dst = Path(dst)
    if format == "dass":
        return save_pretrained(model, dst)
    if getattr(model, "model_type", None) != "dass":
        kind = getattr(model, "model_type", type(model).__name__)
        raise ConfigError(f"format {format!r} is for DASS models; {src} holds a {kind} model")
    state = model.state_dict()
    if format == "hf":
        hf_config = dass_config_to_hf(model.config)
        dst.mkdir(parents=True, exist_ok=True)
        _write_safetensors(dst / WEIGHTS_NAME, state_dict_to_hf_dass(state))
        _write_json(dst / CONFIG_NAME, hf_config)
        _write_json(dst / "preprocessor_config.json", _hf_preprocessor_config())
        return dst
    if dst.suffix not in (".pth", ".pt"):
        raise ConfigError(f"an authors'-format checkpoint is a .pth file; got {dst}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    authors = {k: v.detach().cpu().contiguous() for k, v in state_dict_to_authors(state).items()}
    _atomic_write(dst, lambda tmp: torch.save(authors, tmp))
    return dst
