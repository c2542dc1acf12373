"""Which process of which job this is: one run per job, whatever the number of ranks.

Under torchrun, SLURM or accelerate every rank computes the same run id from the launcher's
environment (or receives rank 0's over ``torch.distributed`` when that is all there is), so
all ranks join one trace without talking to each other first. Rank 0's root span id is
derived from the run id too, so other ranks can parent their spans to it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    #: A string every rank of this job (and no other job) derives the same way, or None.
    job_key: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def primary(self) -> bool:
        return self.rank == 0


def detect_job(environ: Mapping[str, str]) -> JobInfo:
    """Rank and job identity from torchrun/accelerate (``RANK``...), SLURM, or ``torch.distributed``."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK", rank))
    elif "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        rank, world = int(environ["SLURM_PROCID"]), int(environ["SLURM_NTASKS"])
        local = int(environ.get("SLURM_LOCALID", rank))
    else:
        rank, world, local = _torch_distributed_rank() or (0, 1, 0)
    return JobInfo(rank=rank, local_rank=local, world_size=world, job_key=_job_key(environ, world))


def _job_key(environ: Mapping[str, str], world: int) -> str | None:
    if environ.get("TORCHELASTIC_RUN_ID", "none") != "none":
        return f"torchelastic:{environ['TORCHELASTIC_RUN_ID']}"
    if "SLURM_JOB_ID" in environ:
        return f"slurm:{environ['SLURM_JOB_ID']}:{environ.get('SLURM_STEP_ID', '')}"
    if world > 1 and "MASTER_ADDR" in environ and environ.get("LOCAL_WORLD_SIZE") == str(world):
        # One node, no rendezvous id: the launcher (every rank's parent) tells jobs apart.
        return f"local:{environ['MASTER_ADDR']}:{environ.get('MASTER_PORT', '')}:{os.getppid()}"
    return None


def _torch_distributed_rank() -> tuple[int, int, int] | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    rank, world = int(dist.get_rank()), int(dist.get_world_size())
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def shared_trace_id(job: JobInfo, fallback: int) -> int:
    """The run's trace id for a distributed job: from the job key, else rank 0's via a broadcast."""
    if job.job_key is not None:
        return _hash_id(job.job_key, 32) or fallback
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [fallback]
        torch.distributed.broadcast_object_list(box, src=0)
        return int(box[0])
    return fallback


def root_span_id(trace_id: int) -> int:
    """Rank 0's run span id, which every rank can compute from the trace id."""
    return _hash_id(f"runtel-root:{trace_id:032x}", 16) or 1


def _hash_id(text: str, hex_digits: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:hex_digits], 16)
