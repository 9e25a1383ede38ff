"""Self-supervised masked-patch pretraining (``dass pretrain``) of SSAMBA and SSAST encoders.

SSAST's joint discriminative + generative objective as SSAMBA uses it (arXiv 2110.09784,
2405.11831; ``docs/pretraining.md``):

* :mod:`.masking`     cluster masking of M patches per clip (frequency-major ids, patch 0 never masked)
* :mod:`.losses`      the within-clip InfoNCE with its accuracy, the MSE on raw normalised patches
* :mod:`.model`       ``MaskedPatchModel``: encoder + mask embedding + the two prediction heads
* :mod:`.config`      ``PretrainConfig`` (YAML recipe + ``section.key=value`` overrides)
* :mod:`.loop`        ``pretrain(config, resume=False)``: AdamW, warm-up, plateau schedule, DDP, checkpoints
* :mod:`.checkpoint`  our self-supervised folders and the authors' ``.pth`` layout, both ways

Fine-tuning from these checkpoints is :mod:`dass.train.finetune` (``model.init_from`` in ``dass train``).
Submodules are imported on demand to keep ``import dass`` light.
"""
