"""Networks: DASS (VMamba-based audio SSM) and AST (transformer teacher), behind one registry."""

from .registry import architecture, build_from_config, create_model, list_models, register_architecture, register_model

__all__ = [
    "architecture",
    "build_from_config",
    "create_model",
    "list_models",
    "register_architecture",
    "register_model",
]
