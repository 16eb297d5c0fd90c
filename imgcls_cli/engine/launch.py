"""`imgcls train --devices N` on one node: re-launch this command under torchrun (PyTorch's own
launcher and rendezvous; nothing home-made).

The torchrun agent runs in this process (`torch.distributed.run.run`, what the `torchrun` script
calls), so that a failing rank ends the job the way a single process would: a rank's user error
(`ImgclsError`) is written to a file in `IMGCLS_ERROR_DIR` instead of stderr, and this process
prints it once as the usual one line with exit status 2, where torchrun itself would print every
rank's copy, its own traceback and exit 1.  Other failures keep the rank's exit status (3 after too
many non-finite steps, 128 + N for a signal).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

ERROR_DIR_ENV = "IMGCLS_ERROR_DIR"


def record_rank_error(message: str) -> bool:
    """Inside a launched rank: keep a user error for the launcher to print once; True when kept."""
    d = os.environ.get(ERROR_DIR_ENV)
    if not d or "RANK" not in os.environ:
        return False
    try:
        (Path(d) / f"rank{int(os.environ['RANK']):05d}.txt").write_text(message)
    except OSError:
        return False
    return True


def _status(exitcode: int) -> int:
    return 128 - exitcode if exitcode < 0 else exitcode  # -15 (killed by SIGTERM) -> 143, as a shell reports it


def maybe_launch(nproc: int) -> bool:
    """Run this command in N processes under torchrun unless already inside it; True when this call launched."""
    if "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ:
        return False
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from ..errors import ImgclsError

    args = get_args_parser().parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "imgcls_cli",
                                         *sys.argv[1:]])
    # the agent's own log lines repeat what the ranks print (and a traceback of ChildFailedError)
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="imgcls-launch-") as d:
        os.environ[ERROR_DIR_ENV] = d
        try:
            run(args)
        except ChildFailedError as e:
            rank, failure = e.get_first_failure()
            kept = sorted(Path(d).glob("rank*.txt"))  # rank 0's message first: it names the run directory
            if kept:
                # the status a rank exited with itself (a rank that was still exiting may be shown as killed)
                r = int(kept[0].stem.removeprefix("rank"))
                own = [f.exitcode for f in (e.failures.get(r), failure, *e.failures.values()) if f and f.exitcode > 0]
                err = ImgclsError(kept[0].read_text())
                err.exit_code = own[0] if own else 2
                raise err from None
            print(f"error: --devices {nproc}: rank {rank} failed (exit status {_status(failure.exitcode)});"
                  f" its output is above", file=sys.stderr)
            raise SystemExit(_status(failure.exitcode)) from None
        except SignalException as e:
            raise SystemExit(128 + int(e.sigval)) from None
        finally:
            os.environ.pop(ERROR_DIR_ENV, None)
    return True
