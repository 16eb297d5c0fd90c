"""`train.compile_mode` (issue 10: "CUDA graphs if they pay"): validated, passed to torch.compile, and with CUDA
graphs the trainer marks each step's start so graph outputs of the previous step may be reused."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from imgcls_cli.cli.app import app
from imgcls_cli.config import Config

from .conftest import quick_overrides


def test_compile_mode_without_compile_is_refused() -> None:
    res = CliRunner().invoke(app, ["train", "--set", "train.compile_mode=reduce-overhead", "--epochs", "1"])
    text = res.output.strip()
    assert res.exit_code == 2 and len(text.splitlines()) == 1, text
    assert "train.compile_mode=reduce-overhead needs --compile" in text
    res = CliRunner().invoke(app, ["train", "--compile", "--set", "train.compile_mode=fastest", "--epochs", "1"])
    assert res.exit_code == 2 and "train.compile_mode" in res.output and "reduce-overhead" in res.output


@pytest.mark.parametrize("mode,marks", [("default", False), ("reduce-overhead", True),
                                        ("max-autotune-no-cudagraphs", False)])
def test_trainer_compiles_with_the_mode_and_marks_graph_steps(tiny_folder, tmp_path, monkeypatch, mode, marks) -> None:
    from imgcls_cli.engine.trainer import Trainer

    seen, steps = [], []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: seen.append(mode) or model)  # no real compile
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    cfg = Config().replace(**quick_overrides(**{"data.path": str(tiny_folder), "train.out": str(tmp_path / "r"),
                                                "train.compile": True, "train.compile_mode": mode}))
    trainer = Trainer(cfg)
    trainer.fit()
    assert seen == [mode]
    assert trainer.batches_per_epoch > 0
    assert len(steps) == (trainer.batches_per_epoch if marks else 0)
