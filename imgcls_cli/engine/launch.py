"""`imgcls train --devices N` on one node: re-launch this command under torchrun (PyTorch's own
launcher and rendezvous; nothing home-made)."""

from __future__ import annotations

import os
import subprocess
import sys


def maybe_launch(nproc: int) -> bool:
    """Launch torchrun with N processes unless already inside it; True when this call launched."""
    if "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ:
        return False
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "imgcls_cli", *sys.argv[1:]]
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(rc)
    return True
