"""TorchScript export by tracing `model.forward` (eval mode); metadata in `_extra_files`.

Deprecated: torch deprecates `torch.jit.trace` (torch 2.14); `--format pt2` (`torch.export`) is its
successor and `export_model` warns (FutureWarning) when this format is chosen.  It stays for
runtimes that load TorchScript (libtorch, older deployments).  Tracing (not scripting) is used
because it accepts every module imgcls builds; the trace is checked at batch sizes 1, 2 and 7,
which catches shapes frozen into the graph.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import FORMATS, Exporter, module_runner

EXTRA = "imgcls.json"


def _jit_load(out: Path, **kw: object) -> torch.jit.ScriptModule:
    """torch.jit.load without its FutureWarning ("deprecated, switch to torch.export"): the .ts file is what this
    format is, and the warning, printed at every export, says nothing the user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
        return torch.jit.load(str(out), map_location="cpu", **kw)


class TorchScriptExporter(Exporter):
    suffix = ".ts"
    deprecated = "TorchScript (torch.jit.trace) is deprecated by torch; use --format pt2 (torch.export)"

    def export(self, model: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str],
               opset: int | None) -> None:
        traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={EXTRA: json.dumps(meta)})

    def runner(self, out: Path) -> Callable[[np.ndarray], np.ndarray]:
        return module_runner(_jit_load(out).eval())

    def read_metadata(self, out: Path) -> dict[str, str]:
        files = {EXTRA: ""}
        _jit_load(out, _extra_files=files)
        return json.loads(files[EXTRA])


FORMATS.add("torchscript", TorchScriptExporter())
