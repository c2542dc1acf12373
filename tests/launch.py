"""Starting a real 2-process job on CPU (gloo) the way users do: ``python -m torch.distributed.run``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def torchrun(
    script: Path, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``script args`` on 2 local ranks; ``env`` replaces the environment (default: this one).

    The job gets its own wandb service, as a real one does: not the test process's (``WANDB_SERVICE``).
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    environment = {k: v for k, v in (os.environ if env is None else env).items() if k != "WANDB_SERVICE"}
    return subprocess.run(
        [*command, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**environment, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"},
        check=False,
    )
