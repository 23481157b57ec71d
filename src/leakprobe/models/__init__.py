"""Backbones in plain torch, looked up by name."""

from leakprobe.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
