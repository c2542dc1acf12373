"""Saving a torch module's weights for a model artifact, without importing torch otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtel.errors import InvalidParamError


def save_torch_module(model: Any, folder: Path, file_name: str) -> tuple[Path, str]:
    """Write ``model.state_dict()`` to ``folder/file_name``: safetensors when installed, else ``torch.save``.

    Returns the path and the format used (``"safetensors"`` or ``"torch"``).
    """
    state_dict = getattr(model, "state_dict", None)
    if not callable(state_dict):
        raise InvalidParamError(
            f"log_model takes a path or a torch nn.Module, got {type(model).__name__}; "
            "save other models to a file and pass its path"
        )
    import torch

    weights = {key: value.detach().cpu().contiguous() for key, value in state_dict().items()}
    target = folder / file_name
    try:
        from safetensors.torch import save_file
    except ImportError:
        torch.save(weights, target)
        return target, "torch"
    save_file(_unshare(weights), str(target))
    return target, "safetensors"


def _unshare(weights: dict[str, Any]) -> dict[str, Any]:
    """safetensors refuses tensors sharing storage (tied weights); give each its own copy."""
    seen: set[int] = set()
    out = {}
    for key, tensor in weights.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out
