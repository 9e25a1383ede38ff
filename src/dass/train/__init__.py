"""Training and knowledge distillation (``dass train``, ``dass teacher-logits``).

* :mod:`.config`      TrainConfig (YAML recipe + ``section.key=value`` overrides)
* :mod:`.trainer`     ``train(config, resume=False)``: the AST recipe, KD, DDP, checkpoints, weight averaging
* :mod:`.losses`      ``kd_loss``, ``distillation_loss`` (SPEC §5)
* :mod:`.metrics`     ``mean_average_precision``, ``mean_auc``, ``d_prime``
* :mod:`.teachers`    live teachers, ensembles, cached teacher logits
* :mod:`.finetune`    ``model.init_from`` (fine-tuning self-supervised checkpoints), head learning rate
* :mod:`.tasks`       multi-label vs single-label: loss, scores, metrics, confusion matrix
* :mod:`.distributed` torchrun process groups, deterministic (weighted) distributed sampler

Submodules are imported on demand (``from dass.train.trainer import train``) to keep ``import dass`` light.
"""
