"""``llmcf train --nproc N``: relaunch the same command under ``torchrun`` (torch.distributed.run) on this machine.

The child command is ``python -m torch.distributed.run --standalone --nproc-per-node N -m llmcf.cli -- train <args>``
with ``--nproc`` removed (the ``--`` keeps torchrun's own parser off options such as ``--run``, which it would take
for an abbreviation of its ``--run-path``); each of the N processes is an ordinary ``llmcf train`` that joins the process group
(``llmcf.train.distributed``). For several machines, run torchrun yourself on each (docs/scaling.md).
"""
from __future__ import annotations

import os
import subprocess
import sys


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(nproc)}",
            "-m", "llmcf.cli", "--", *strip_nproc(argv)]


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch(nproc: int, argv: list[str]) -> int:
    """Run the torchrun command and return its exit code (0 when every process succeeded)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(torchrun_command(nproc, argv), env=env).returncode
