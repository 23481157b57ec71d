"""String-keyed model registry: ``create_model("resnet18-cifar")`` is a plain look-up."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from leakprobe.errors import LeakprobeError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a factory under ``name``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    _load_builtin()
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with keyword overrides.

    Raises:
        LeakprobeError: for an unknown name, listing the known ones.
    """
    _load_builtin()
    if name not in _MODELS:
        import difflib

        close = difflib.get_close_matches(str(name).lower(), list_models(), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise LeakprobeError(f"unknown architecture '{name}'; known: "
                             f"{', '.join(list_models())}{hint}")
    try:
        return _MODELS[name](**kwargs)
    except TypeError as e:
        raise LeakprobeError(f"bad options for architecture '{name}': {e}") from e


def int_attribute(model: nn.Module, name: str) -> int:
    """``model.<name>``: a plain int a model stores (``embed_dim``, ``input_size``...).

    The registered models keep these as Python ints, but ``nn.Module.__getattr__`` is typed as
    returning a tensor or a module; this states the type (the value is returned as it is, and a
    model without the attribute still raises AttributeError).
    """
    value: int = getattr(model, name)
    return value


def _load_builtin() -> None:
    from leakprobe.models import (  # noqa: F401  (registration side effects)
        captioner,
        heads,
        public,
        resnet,
        unet,
        vit,
        wide_resnet,
    )
