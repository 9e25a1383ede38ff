"""Training and knowledge distillation (``dass train``, ``dass teacher-logits``).

* :mod:`.config`      TrainConfig (YAML recipe + ``section.key=value`` overrides)
* :mod:`.trainer`     ``train(config, resume=False)``: the AST recipe, KD, DDP, checkpoints, weight averaging
* :mod:`.losses`      ``kd_loss``, ``distillation_loss`` (SPEC §5)
* :mod:`.metrics`     ``mean_average_precision``, ``mean_auc``, ``d_prime``
* :mod:`.teachers`    live teachers, ensembles, cached teacher logits
* :mod:`.distributed` torchrun process groups, deterministic (weighted) distributed sampler

Submodules are imported on demand (``from dass.train.trainer import train``) to keep ``import dass`` light.
"""
