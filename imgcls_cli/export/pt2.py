"""`torch.export` ExportedProgram (`.pt2`): `torch.export.export` -> `torch.export.save`; metadata in `imgcls.json`.

The program is captured with a dynamic batch (`torch.export.Dim`) and loaded back with
`torch.export.load(path).module()`, which needs torch but none of imgcls's classes.  Unlike a
TorchScript trace, data-dependent Python control flow on the batch size is refused at export time
(a guard on a dynamic dimension) instead of being frozen into the graph.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import FORMATS, Exporter, module_runner
from .onnx import ImagesOnly

EXTRA = "imgcls.json"


class Pt2Exporter(Exporter):
    suffix = ".pt2"

    def export(self, model: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str],
               opset: int | None) -> None:
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.export.export(ImagesOnly(model).eval(), (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(out), extra_files={EXTRA: json.dumps(meta)})

    def runner(self, out: Path) -> Callable[[np.ndarray], np.ndarray]:
        return module_runner(torch.export.load(str(out)).module())

    def read_metadata(self, out: Path) -> dict[str, str]:
        files = {EXTRA: ""}
        torch.export.load(str(out), extra_files=files)
        return json.loads(files[EXTRA])


FORMATS.add("pt2", Pt2Exporter())
