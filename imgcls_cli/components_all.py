"""Import every component module once so that all registries are filled.

A new component file is added here (one line) and is then known to the config schema, the CLI,
the error messages and the contract tests.
"""

from __future__ import annotations

import importlib

_MODULES = [
    "imgcls_cli.models.backbones",
    "imgcls_cli.models.heads",
    "imgcls_cli.models.attention.modules",
    "imgcls_cli.losses.cross_entropy",
    "imgcls_cli.losses.arcface",
    "imgcls_cli.losses.center",
    "imgcls_cli.data.samplers",
    "imgcls_cli.data.autoaugment",
    "imgcls_cli.methods.standard",
    "imgcls_cli.methods.bbn",
    "imgcls_cli.methods.decoupling",
    "imgcls_cli.methods.wsdan",
    "imgcls_cli.models.bilinear",
    "imgcls_cli.viz.cam",
]

for _m in _MODULES:
    try:
        importlib.import_module(_m)
    except ModuleNotFoundError as e:  # a component file not written yet must not break the rest
        if e.name != _m:
            raise
