"""``DASSFeatureExtractor``: the SPEC §1 front end as a transformers ``SequenceFeatureExtractor``.

It takes the same settings as the released models' (AST) feature extractor -- 16 kHz, 128 mel bins,
1024 frames, AudioSet mean/std -- and computes the features with :class:`dass.features.FeatureExtractor`
(pure torch Kaldi fbank), so transformers users and dass get the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging

from ..errors import ConfigError
from ..features import AUDIOSET_MEAN, AUDIOSET_STD, FeatureExtractor

__all__ = ["DASSFeatureExtractor"]

logger = logging.get_logger(__name__)


class DASSFeatureExtractor(SequenceFeatureExtractor):
    r"""Waveforms -> normalised log-mel features ``input_values`` ``(batch, max_length, num_mel_bins)``.

    Per waveform: subtract its mean, Kaldi-compatible 128-bin log-mel filterbank (25 ms frames every
    10 ms), zero-pad at the end / cut to ``max_length`` frames (``None``: the longest waveform's
    length, for audio of any duration), then ``(fbank - mean) / (2 * std)`` if ``do_normalize``.
    Waveforms at another ``sampling_rate`` are resampled (soxr) first.

    Args:
        feature_size: kept for transformers (1: raw audio is one value per sample).
        sampling_rate: the rate the model expects (16000).
        num_mel_bins: mel filters (128).
        max_length: frames per clip (1024 ~ 10.24 s) or ``None``.
        padding_value: the value of padded frames before normalisation (0.0, as the released models).
        do_normalize, mean, std: the normalisation (AudioSet statistics by default).
        return_attention_mask: also return ``attention_mask`` ``(batch, frames)`` (1 on audio frames).
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(self, feature_size: int = 1, sampling_rate: int = 16000, num_mel_bins: int = 128,
                 max_length: int | None = 1024, padding_value: float = 0.0, do_normalize: bool = True,
                 mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD, return_attention_mask: bool = False,
                 **kwargs: Any) -> None:
        if padding_value != 0.0:
            raise ConfigError(f"DASSFeatureExtractor pads with zeros before normalisation; "
                              f"padding_value={padding_value} is not supported")
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value,
                         return_attention_mask=return_attention_mask, **kwargs)
        self.num_mel_bins = num_mel_bins
        self.max_length = max_length
        self.do_normalize = do_normalize
        self.mean = mean
        self.std = std
        self._frontend()  # validates the settings now rather than on the first call

    def _frontend(self) -> FeatureExtractor:
        return FeatureExtractor(sampling_rate=self.sampling_rate, num_mel_bins=self.num_mel_bins,
                                max_length=self.max_length, mean=self.mean, std=self.std,
                                do_normalize=self.do_normalize)

    def __call__(self, raw_speech: Any, sampling_rate: int | None = None, return_tensors: str | None = None,
                 return_attention_mask: bool | None = None, **kwargs: Any) -> BatchFeature:
        """Features of one waveform ``(samples,)``, a batch ``(batch, samples)`` or a list of waveforms.

        ``raw_speech``: float samples in [-1, 1] (numpy, torch or lists), mono. ``sampling_rate``: the
        rate of ``raw_speech`` (pass it: without it ``self.sampling_rate`` is assumed, with a warning).
        ``return_tensors``: ``"pt"``, ``"np"`` or ``None`` (numpy arrays). Returns a
        :class:`~transformers.BatchFeature` with ``input_values`` ``(batch, T, num_mel_bins)`` (float32).
        """
        if kwargs:
            raise ConfigError(f"DASSFeatureExtractor got unsupported argument(s) {', '.join(sorted(kwargs))}; "
                              "it takes raw_speech, sampling_rate, return_tensors, return_attention_mask")
        if return_tensors not in (None, "pt", "np"):
            raise ConfigError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        if sampling_rate is None:
            logger.warning(f"No sampling_rate passed to DASSFeatureExtractor; assuming {self.sampling_rate} Hz. "
                           "Pass sampling_rate to avoid silent errors.")
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        features = self._frontend()(raw_speech, sampling_rate=sampling_rate, return_tensors="pt",
                                    return_attention_mask=bool(return_attention_mask))
        if return_tensors != "pt":
            features = {key: np.asarray(value.cpu().numpy()) for key, value in features.items()}
        return BatchFeature(features, tensor_type=return_tensors)
