"""``DASSConfig``: the Hugging Face configuration of a DASS classifier (model_type ``"dass"``).

It reads the ``config.json`` of the released Hugging Face checkpoints (``depths``, ``dims``,
``num_classes``, ``id2label``, ``drop_path_rate``, ``patch_size``, ``embed_dim``, ``max_length``,
``num_mel_bins``, ``use_checkpoint``, ...) and tolerates keys it does not know (they are kept as
attributes, as transformers does). ``num_classes`` is the same number as transformers'
``num_labels`` (``len(id2label)``); both stay in step, and ``num_classes`` is written on save so that
:func:`dass.from_pretrained` reads our folders with the same code as the released ones.

Not to be confused with :class:`dass.models.dass.DASSConfig`, the plain dataclass of our own network;
:meth:`DASSConfig.to_network_config` converts (through :func:`dass.checkpoints.dass_config_from_hf`,
the one home of that mapping).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from ..errors import ConfigError

__all__ = ["DASSConfig"]

DEFAULT_NUM_CLASSES = 527  # AudioSet


class DASSConfig(PretrainedConfig):
    r"""Configuration of :class:`~dass.hf.DASSForAudioClassification` (defaults: DASS-small on AudioSet).

    Args:
        depths: VSS blocks per stage, e.g. ``(2, 2, 8, 2)`` (small) or ``(2, 2, 20, 2)`` (medium).
        dims: channels per stage, e.g. ``(96, 192, 384, 768)``; an int ``d`` means ``d * 2**i``.
        num_classes: outputs of the classification head (= ``num_labels``); if ``id2label`` is given
            too, the two must agree. An explicit ``num_labels`` (``from_pretrained(folder,
            num_labels=10, ignore_mismatched_sizes=True)`` for fine-tuning) overrides both.
        drop_path_rate: stochastic depth, rising linearly over the blocks from 0 to this (training only).
        patch_size, embed_dim: fixed by the released network (4 and ``dims[0]``); checked when the
            model is built.
        max_length, num_mel_bins: the input the checkpoint was trained on (1024 frames of 128 bins);
            informational (the network takes any number of frames).
        use_checkpoint: the released code's gradient-checkpointing switch; ignored.
        problem_type: ``"multi_label_classification"`` (sigmoid per class, BCE loss).

    A released ``config.json``'s ``auto_map`` (pointing at the authors' remote code) is dropped: this
    class is the native implementation, so no ``trust_remote_code`` is needed, and folders we save
    never point at code files that are not there.
    """

    model_type = "dass"

    depths: list[int] | tuple[int, ...] = (2, 2, 8, 2)
    dims: list[int] | tuple[int, ...] | int = (96, 192, 384, 768)
    drop_path_rate: float = 0.2
    patch_size: int = 4
    embed_dim: int | None = None
    max_length: int | None = 1024
    num_mel_bins: int = 128
    use_checkpoint: bool = False
    problem_type: str | None = "multi_label_classification"

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.pop("auto_map", None)
        num_classes = kwargs.pop("num_classes", None)
        if num_classes is not None:
            try:
                num_classes = int(num_classes)
            except (TypeError, ValueError):
                raise ConfigError(f"DASSConfig: num_classes must be an int, got {num_classes!r}") from None
        num_labels_given = kwargs.get("num_labels") is not None  # e.g. from_pretrained(..., num_labels=10)
        if self.id2label is None and not num_labels_given:
            kwargs["num_labels"] = num_classes if num_classes is not None else DEFAULT_NUM_CLASSES
        super().__post_init__(**kwargs)
        if num_classes is not None and not num_labels_given and self.num_labels != num_classes:
            raise ConfigError(
                f"DASSConfig: num_classes={num_classes} but id2label names {self.num_labels} classes"
            )
        if self.label2id is None:
            self.label2id = {name: index for index, name in self.id2label.items()}
        self.depths = [int(d) for d in self.depths]
        self.dims = int(self.dims) if isinstance(self.dims, int) else [int(d) for d in self.dims]
        if self.embed_dim is None:
            self.embed_dim = self.dims if isinstance(self.dims, int) else self.dims[0]

    @property
    def num_classes(self) -> int:
        """Number of classes of the head; an alias of ``num_labels`` (the released configs' name)."""
        return self.num_labels

    @num_classes.setter
    def num_classes(self, value: int) -> None:
        self.num_labels = int(value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (with ``num_classes``, and never an ``auto_map``)."""
        output = super().to_dict()
        output["num_classes"] = self.num_labels
        output.pop("auto_map", None)
        return output

    def to_network_config(self):
        """Our network's :class:`dass.models.dass.DASSConfig` (depths, dims, classes, labels, drop path).

        Raises ConfigError for settings the released network cannot have (patch_size != 4, ...).
        """
        from ..checkpoints import dass_config_from_hf

        return dass_config_from_hf(self.to_dict())
