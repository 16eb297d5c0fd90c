"""Non-finite steps skipped on the device (train.finite_check=step, engine/step_guard.py).

A run that meets a bad batch must end bit-identical to a run that never saw it (weights, BatchNorm
buffers, optimizer state), for fused SGD/AdamW (skipped inside the kernel) and for foreach kernels
(one host sync); and the training loop must not read the device once per step to get there.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import imgcls_cli as ic
from imgcls_cli.config import OptimConfig
from imgcls_cli.engine.optim import build_optimizer, param_groups
from imgcls_cli.engine.step_guard import StepGuard
from imgcls_cli.losses.center import CenterLoss

from .conftest import make_folder_dataset, quick_overrides


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


def _optimizer(model: nn.Module, name: str, fused: bool) -> torch.optim.Optimizer:
    oc = OptimConfig(name="adamw" if name == "adamw" else "sgd", lr=0.05, nesterov=name == "nesterov", fused=fused,
                     weight_decay=1e-3, schedule="constant")
    return build_optimizer(oc, param_groups(model, oc.weight_decay, True), torch.device("cpu"))


def _train(batches: list, name: str, fused: bool, guarded: bool, bad: str | None = None,
           accum: int = 1) -> tuple[nn.Module, torch.optim.Optimizer]:
    """`bad`: how a batch whose images are None goes wrong ("loss": NaN input; "grad": inf gradient)."""
    model = _model()
    opt = _optimizer(model, name, fused)
    guard = StepGuard(model, [], opt, torch.device("cpu"), scaler_enabled=False) if guarded else None
    ce = nn.CrossEntropyLoss()
    for i, (x, y) in enumerate(batches):
        hook = None
        if x is None:
            x, y = _batches(1)[0]
            if bad == "loss":
                x = x * float("nan")
            else:
                hook = model[5].weight.register_hook(lambda g: g * float("inf"))
        if guard is not None and i % accum == 0:
            guard.begin()
        loss = ce(model(x), y)
        if guard is not None:
            guard.loss_ok(loss)
        (loss / accum).backward()
        if hook is not None:
            hook.remove()
        if (i + 1) % accum == 0:
            if guard is not None:
                guard.check_grads(model.parameters())
                guard.step(opt, torch.amp.GradScaler("cpu", enabled=False))
                guard.end()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
    return model, opt


def _assert_identical(a: tuple[nn.Module, torch.optim.Optimizer], b: tuple[nn.Module, torch.optim.Optimizer]) -> None:
    for (k, va), vb in zip(a[0].state_dict().items(), b[0].state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    for pa, pb in zip(a[0].parameters(), b[0].parameters(), strict=True):
        sa, sb = a[1].state.get(pa, {}), b[1].state.get(pb, {})
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
@pytest.mark.parametrize("name", ["sgd", "nesterov", "adamw"])
@pytest.mark.parametrize("where", [0, 2], ids=["first-step", "later-step"])
@pytest.mark.parametrize("bad", ["loss", "grad"])
def test_skipped_step_is_as_if_the_batch_never_came(name: str, fused: bool, where: int, bad: str) -> None:
    good = _batches(4)
    with_bad = good[:where] + [(None, None)] + good[where:]
    _assert_identical(_train(with_bad, name, fused, guarded=True, bad=bad), _train(good, name, fused, guarded=False))


def test_a_bad_micro_batch_skips_its_whole_accumulated_step() -> None:
    good = _batches(4)  # steps (0, 1) and (2, 3); the bad micro-batch replaces nothing, it joins step 2
    ref = _train(good[:2], "sgd", True, guarded=False, accum=2)
    got = _train(good[:2] + [good[2], (None, None)], "sgd", True, guarded=True, bad="loss", accum=2)
    _assert_identical(got, ref)


def test_unguarded_fused_sgd_first_step_matches_plain_sgd() -> None:
    """build_optimizer zeroes fused SGD's momentum up front; the first step must still be buf = g."""
    a = _train(_batches(3), "nesterov", True, guarded=False)
    b = _train(_batches(3), "nesterov", False, guarded=False)
    for pa, pb in zip(a[0].parameters(), b[0].parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_centres_moved_by_a_bad_step_are_put_back() -> None:
    """Center loss in paper mode moves its centres after the step (eq. 4) from the batch's features."""
    model = _model()
    center = CenterLoss(3, 4, update="paper", alpha=0.5)
    opt = _optimizer(model, "sgd", True)
    guard = StepGuard(model, [center], opt, torch.device("cpu"), scaler_enabled=False)
    before = center.centers.detach().clone()
    guard.begin()
    feats = torch.full((2, 4), float("nan"))
    loss = center(feats, torch.tensor([0, 1]))
    guard.loss_ok(loss)
    guard.check_grads(model.parameters())
    guard.step(opt, torch.amp.GradScaler("cpu", enabled=False))
    center.after_step()
    assert not torch.isfinite(center.centers).all()  # what eq. 4 did with NaN features
    guard.end()
    assert torch.equal(center.centers, before)
    assert guard.poll() == (1, 1) and guard.poll() == (0, 1)  # the run of bad steps goes on until a good one


def _rank(rank: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    model = _model()
    opt = _optimizer(model, "sgd", True)
    guard = StepGuard(model, [], opt, torch.device("cpu"), scaler_enabled=False)
    x, y = _batches(1)[0]
    guard.begin()
    loss = nn.functional.cross_entropy(model(x * (float("nan") if rank == 0 else 1.0)), y)
    guard.loss_ok(loss)
    torch.save(float(guard.bad), f"{out}.{rank}.before")
    guard.check_grads([])  # no gradients: only the loss verdict, agreed by all ranks
    torch.save(float(guard.bad), f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def test_ranks_agree_on_a_skip() -> None:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bad")
        mp.spawn(_rank, args=(f"file://{d}/init", out), nprocs=2, join=True)
        assert [torch.load(f"{out}.{r}.before") for r in (0, 1)] == [1.0, 0.0]
        assert [torch.load(f"{out}.{r}") for r in (0, 1)] == [1.0, 1.0]


class _CountReads(TorchDispatchMode):
    """Counts the ops that make the host wait for the device on CUDA (tensor -> Python value, nonzero)."""

    READS = {"_local_scalar_dense", "nonzero", "masked_select", "unique_dim", "_unique2", "bincount"}  # CUDA syncs

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in self.READS:
            self.n += 1
        return func(*args, **(kwargs or {}))


def _reads(tmp_path: Path, data: Path, steps: int, **extra: object) -> int:
    mode = _CountReads()
    with mode:
        ic.train(**quick_overrides(**{"data.path": str(data), "data.img_size": 16, "train.batch_size": 2,
                                      "train.steps_per_epoch": steps, "train.log_every": 1000,
                                      "optim.name": "sgd", "optim.lr": 0.01,
                                      "train.tensorboard": False, "train.out": str(tmp_path / f"run{steps}"),
                                      **extra}))
    return mode.n


@pytest.mark.parametrize("extra", [
    {}, {"optim.grad_clip": 1.0, "optim.name": "adamw", "optim.accum_steps": 2}, {"aug.mixup": 0.2},
    {"aug.cutmix": 1.0}, {"loss.name": "arcface"}, {"loss.name": "center", "loss.center_update": "paper"},
    {"optim.ema": 0.99}, {"train.method": "bbn"}, {"train.method": "wsdan", "model.backbone": "resnet18"}],
    ids=["default", "clip-adamw-accum", "mixup", "cutmix", "arcface", "center-paper", "ema", "bbn", "wsdan"])
def test_training_steps_do_not_read_the_device(tmp_path: Path, extra: dict) -> None:
    """Reads per epoch are a constant (progress update, epoch end, evaluation): 2 and 8 steps read as often."""
    data = make_folder_dataset(tmp_path / "data", classes=2, train=8, val=2)
    assert _reads(tmp_path, data, 2, **extra) == _reads(tmp_path, data, 8, **extra)


@pytest.mark.parametrize("extra,per_step", [({"train.log_steps": True}, 2), ({"optim.fused": False}, 1)],
                         ids=["log_steps", "foreach"])
def test_the_read_counter_sees_per_step_reads(tmp_path: Path, extra: dict, per_step: int) -> None:
    """The counter above is not blind: steps.jsonl reads the loss and the verdict of every step, and foreach
    optimizers need the verdict on the host before they step."""
    data = make_folder_dataset(tmp_path / "data", classes=2, train=8, val=2)
    assert _reads(tmp_path, data, 8, **extra) - _reads(tmp_path, data, 2, **extra) == 6 * per_step


@pytest.mark.parametrize("poison,finite", [(None, True), (float("nan"), False), (float("inf"), False),
                                           (-float("inf"), False), ("both", False), (1e30, True)])
def test_gradient_verdict(poison: object, finite: bool) -> None:
    from imgcls_cli.engine.step_guard import _grad_total

    grads = [torch.randn(5, 3), torch.randn(7), torch.randn(2, 2, 3)]
    if poison == "both":  # +inf and -inf in different tensors must not cancel into a finite total
        grads[0][1, 1], grads[2][0, 1, 2] = float("inf"), -float("inf")
    elif poison is not None:
        grads[1][3] = poison
    assert bool(torch.isfinite(_grad_total(grads))) is finite
    assert _grad_total([]) is None


def test_evaluation_batches_do_not_read_the_device() -> None:
    from imgcls_cli.engine.evaluator import evaluate

    model = _model().eval()
    g = torch.Generator().manual_seed(2)
    batches = [{"bad": [], "images": torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=g),
                "targets": torch.randint(0, 3, (5,), generator=g)} for _ in range(4)]
    counts, results = [], []
    for n in (1, 4):
        mode = _CountReads()
        with mode:
            res = evaluate(model, batches[:n], lambda x: x.float() / 255, 3, torch.device("cpu"))
        counts.append(mode.n)
        results.append(res)
    assert counts[0] == counts[1]
    with torch.no_grad():
        logits = torch.cat([model(b["images"].float() / 255) for b in batches])
    y = torch.cat([b["targets"] for b in batches])
    want = torch.bincount(y * 3 + logits.argmax(1), minlength=9).view(3, 3)
    assert torch.equal(results[1].confusion, want) and results[1].n == 20


def test_with_gradscaler_the_scaler_skips_and_the_guard_restores_and_counts() -> None:
    """fp16 (CUDA) path, run here with the CPU GradScaler: overflowing gradients after a finite loss are the
    scaler's routine business (not a bad step); a NaN loss is a bad step: skipped, buffers restored, counted."""
    model = _model()
    opt = _optimizer(model, "sgd", True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    guard = StepGuard(model, [], opt, torch.device("cpu"), scaler_enabled=True)
    (x, y), = _batches(1)
    for bad in ("grad", "loss"):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        guard.begin()
        hook = model[5].weight.register_hook(lambda g: g * float("inf")) if bad == "grad" else None
        loss = nn.functional.cross_entropy(model(x * float("nan") if bad == "loss" else x), y)
        guard.loss_ok(loss)
        scaler.scale(loss).backward()
        if hook is not None:
            hook.remove()
        guard.check_grads(model.parameters())
        guard.step(opt, scaler)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        guard.end()
        after = model.state_dict()
        for k in ("5.weight", "0.weight"):
            assert torch.equal(before[k], after[k]), (bad, k)  # the scaler skipped the update either way
        if bad == "loss":  # BatchNorm statistics of the NaN forward were put back
            assert all(torch.equal(before[k], after[k]) for k in before)
        assert guard.poll()[0] == (bad == "loss")
    assert scaler.get_scale() == 2.0**2  # backed off twice


def test_an_empty_first_batch_still_opens_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With accumulation, a window whose first batch had no readable image starts at its second batch:
    the guard must still reset its verdict there, or the bad step before would skip this good one."""
    from imgcls_cli.data.loader import DeviceNormalizer

    data = make_folder_dataset(tmp_path / "data", classes=2, train=8, val=2)  # 16 images: 8 batches of 2
    orig, calls = DeviceNormalizer.__call__, [0]

    def hooked(self, images):
        calls[0] += 1
        x = orig(self, images)
        return x * float("nan") if calls[0] in (1, 2) else x  # training micro-batches 1-2: step 1 is bad

    monkeypatch.setattr(DeviceNormalizer, "__call__", hooked)
    import imgcls_cli.engine.trainer as tr

    real = tr.guarded

    def drop_third(loader, signals=None):  # batch 3 (first of step 2's window) arrives with no readable image
        for k, b in enumerate(real(loader, signals)):
            yield {**b, "images": None, "bad": []} if k == 2 else b

    monkeypatch.setattr(tr, "guarded", drop_third)
    res = ic.train(**quick_overrides(**{"data.path": str(data), "data.img_size": 16, "train.batch_size": 2,
                                        "optim.accum_steps": 2, "train.out": str(tmp_path / "run"),
                                        "train.tensorboard": False}))
    rec = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert rec["skipped_steps"] == 1 and rec["steps"] == 4
