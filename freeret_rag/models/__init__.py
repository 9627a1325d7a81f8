"""Model loading and the per-family adapters."""

from .adapters import ADAPTERS, FamilyAdapter, adapter_for
from .loading import LoadedModel, load_model, pick_device, pick_dtype

__all__ = ["ADAPTERS", "FamilyAdapter", "LoadedModel", "adapter_for", "load_model", "pick_device", "pick_dtype"]
