"""Framework integrations, one module per framework, each importing its framework lazily.

``runtel.integrations.lightning`` (``pip install runtel[lightning]``) and
``runtel.integrations.huggingface`` (``pip install runtel[transformers]``); importing one
without its framework raises :class:`runtel.errors.MissingExtraError` naming the extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from runtel._distributed import detect_job
from runtel._otel import remote_parent, run_trace_id
from runtel.config import resolve_settings


def _rank_zero_alone(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``init_kwargs`` for a run that rank 0 creates while the other ranks do not call ``runtel.init``.

    Where the launcher names no job (Lightning's own, DeepSpeed's), ``runtel.init`` takes rank 0's
    run id by a ``torch.distributed`` broadcast that every rank must join; with rank 0 alone it
    would wait forever (or pair with the framework's next collective), so rank 0 picks the id.
    """
    job = detect_job(os.environ)
    given_id = init_kwargs.get("resume") or resolve_settings({"run_id": init_kwargs.get("run_id")}).run_id
    if not job.distributed or job.job_key is not None or given_id or remote_parent(os.environ) is not None:
        return dict(init_kwargs)
    return {**init_kwargs, "run_id": f"{run_trace_id(None):032x}"}
