"""Model loading and the per-family adapters."""

from .adapters import ADAPTERS, FULL_BUDGET, STAGES, FamilyAdapter, Stage, VisualBudget, adapter_for
from .loading import LoadedModel, load_model, pick_device, pick_dtype

__all__ = ["ADAPTERS", "FULL_BUDGET", "STAGES", "FamilyAdapter", "Stage", "VisualBudget", "LoadedModel", "adapter_for", "load_model", "pick_device", "pick_dtype"]
