"""Hugging Face transformers integration: DASS as a native transformers model (model_type ``"dass"``).

``import dass.hf`` registers :class:`DASSConfig`, :class:`DASSModel`, :class:`DASSForAudioClassification`
and :class:`DASSFeatureExtractor` with ``AutoConfig``, ``AutoModel``,
``AutoModelForAudioClassification`` and ``AutoFeatureExtractor``; after it, released DASS folders
(``config.json`` with model_type "dass") and folders written by ``save_pretrained`` load without
``trust_remote_code``::

    import dass.hf  # registers "dass" with transformers' Auto classes
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    model = AutoModelForAudioClassification.from_pretrained(folder)
    feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
    inputs = feature_extractor(waveform, 16000, return_tensors="pt")
    probabilities = torch.sigmoid(model(**inputs).logits)
    tagger = pipeline("audio-classification", model=folder)  # [{"score": ..., "label": ...}, ...]

Needs transformers (``pip install dass[hf]``); ``import dass`` itself never imports transformers.
The weight layout is the released one (SPEC §3b), which :func:`dass.from_pretrained` and ``dass tag``
read too.
"""

from __future__ import annotations

try:
    import transformers  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "dass.hf needs the transformers package; install it with `pip install dass[hf]` "
        f"(or `pip install transformers`) ({error})"
    ) from None

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

from .configuration_dass import DASSConfig
from .feature_extraction_dass import DASSFeatureExtractor
from .modeling_dass import DASSForAudioClassification, DASSModel, DASSPreTrainedModel

__all__ = [
    "DASSConfig",
    "DASSFeatureExtractor",
    "DASSForAudioClassification",
    "DASSModel",
    "DASSPreTrainedModel",
    "register",
]


def register() -> None:
    """Register the DASS classes with transformers' Auto classes (done on ``import dass.hf``; idempotent)."""
    AutoConfig.register(DASSConfig.model_type, DASSConfig, exist_ok=True)
    AutoModel.register(DASSConfig, DASSModel, exist_ok=True)
    AutoModelForAudioClassification.register(DASSConfig, DASSForAudioClassification, exist_ok=True)
    AutoFeatureExtractor.register(DASSConfig, DASSFeatureExtractor, exist_ok=True)


register()
