"""Networks: DASS (VMamba-based audio SSM) and AST (transformer teacher), behind one registry."""

from .registry import architecture, build_from_config, create_model, list_models, register_architecture, register_model

__all__ = [
    "architecture",
    "build_from_config",
    "create_model",
    "init_from_vmamba",
    "list_models",
    "register_architecture",
    "register_model",
]


def __getattr__(name: str):
    # Lazy: importing dass.models must not pull in the scan kernels (numba) until a network is built.
    if name == "init_from_vmamba":
        from .dass import init_from_vmamba

        return init_from_vmamba
    raise AttributeError(f"module 'dass.models' has no attribute {name!r}")
