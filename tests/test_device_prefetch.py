"""data/device_prefetch.py: training batches copied to the GPU on a side stream, one batch ahead.

The stream logic is checked on the CPU with stand-in streams (what is waited on, recorded and fetched
when); the real copies are checked where a GPU is present.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from imgcls_cli.config import build_config
from imgcls_cli.data.device_decode import DeviceDecodeLoader
from imgcls_cli.data.device_prefetch import DevicePrefetchLoader
from imgcls_cli.engine.setup import train_loader_for


def _batches(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"images": torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=g),
             "targets": torch.tensor([i, i + 1]), "indices": torch.tensor([2 * i, 2 * i + 1]), "bad": []}
            for i in range(n)]


class Counting:
    """A loader whose iterator counts the batches taken from it and may fail after `fail_after` batches."""

    def __init__(self, batches: list[dict], fail_after: int | None = None):
        self.batches, self.fail_after, self.taken = batches, fail_after, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for i, b in enumerate(self.batches):
            if i == self.fail_after:
                raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly")
            self.taken += 1
            yield b


class FakeStream:
    def __init__(self, log: list, name: str):
        self.log, self.name = log, name

    def wait_stream(self, other: FakeStream) -> None:
        self.log.append(("wait", self.name, other.name))


@pytest.fixture
def streams(monkeypatch):
    """CPU stand-ins for torch.cuda.Stream / stream / current_stream and Tensor.record_stream; returns the log."""
    log: list = []
    train = FakeStream(log, "train")

    @contextlib.contextmanager
    def on(stream):
        log.append(("enter", stream.name))
        yield
        log.append(("exit", stream.name))

    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream(log, "copy"))
    monkeypatch.setattr(torch.cuda, "stream", on)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: train)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda t, s: log.append(("record", s.name, tuple(t.shape))))
    return log


def test_same_batches_in_order_one_ahead(streams) -> None:
    src = Counting(_batches(4))
    got = []
    for i, b in enumerate(DevicePrefetchLoader(src, torch.device("cpu"))):
        assert src.taken == min(i + 2, 4)  # batch i + 1 is being copied while batch i is used
        got.append(b)
    assert len(got) == 4
    for a, b in zip(got, _batches(4), strict=True):
        assert a.keys() == b.keys()
        for k in ("images", "targets", "indices"):
            assert torch.equal(a[k], b[k])


def test_waits_and_records_on_the_training_stream(streams) -> None:
    list(DevicePrefetchLoader(Counting(_batches(2)), torch.device("cpu")))
    # batch 0 copied; training stream waits, records the images; batch 1 copied; same for batch 1
    one = [("enter", "copy"), ("exit", "copy"), ("wait", "train", "copy"), ("record", "train", (2, 3, 4, 4))]
    assert streams == one + one


def test_a_loader_error_comes_after_the_batches_before_it(streams) -> None:
    got = []
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        for b in DevicePrefetchLoader(Counting(_batches(5), fail_after=3), torch.device("cpu")):
            got.append(b)
    assert [int(b["targets"][0]) for b in got] == [0, 1, 2]


def test_empty_batches_pass_through(streams) -> None:
    empty = {"images": None, "targets": None, "indices": None, "bad": [(3, "x.jpg", "truncated")]}
    got = list(DevicePrefetchLoader(Counting([empty, *_batches(1)]), torch.device("cpu")))
    assert got[0] == empty and torch.equal(got[1]["images"], _batches(1)[0]["images"])


def test_iterator_created_at_iter_so_workers_start_early(streams) -> None:
    made = []

    class Loader:
        def __iter__(self):
            made.append(1)
            return iter([])

    it = iter(DevicePrefetchLoader(Loader(), torch.device("cpu")))
    assert made == [1]  # EpochBatches.prefetch relies on this: the workers start before the first next()
    assert list(it) == []


@pytest.mark.parametrize(("device", "decode", "pin", "wrapped"), [
    ("cuda", "workers", True, DevicePrefetchLoader), ("cuda", "workers", False, None), ("cpu", "workers", True, None),
    ("cuda", "device", True, DeviceDecodeLoader)])
def test_used_for_pinned_cuda_batches_only(tmp_path, device, decode, pin, wrapped) -> None:
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / c / "0.jpg")
    cfg = build_config(None, {"data.path": str(tmp_path), "data.decode": decode, "data.pin_memory": pin,
                              "aug.preset": "random_resized_crop", "data.workers": 0, "train.batch_size": 2})
    from imgcls_cli.data.dataset import ImageDataset
    from imgcls_cli.data.device_decode import EncodedTrainSet
    from imgcls_cli.data.sources import open_data
    from imgcls_cli.data.transforms import transforms_from_config
    from imgcls_cli.engine.setup import make_sampler

    bundle = open_data(cfg.data)
    train_tf, _ = transforms_from_config(cfg, bundle)
    ds = (EncodedTrainSet if decode == "device" else ImageDataset)(bundle.train, train_tf, seed=0)
    sampler = make_sampler("instance", cfg, bundle.train.labels, bundle.num_classes)
    loader = train_loader_for(cfg, ds, sampler, torch.device(device), 0)
    if wrapped is None:
        assert isinstance(loader, torch.utils.data.DataLoader)
    else:
        assert isinstance(loader, wrapped)
        assert len(loader) == 1 and loader.batch_size == 2  # the loader's attributes show through


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_copies_match_the_host_batches() -> None:
    dev = torch.device("cuda")
    out = []
    for b in DevicePrefetchLoader(Counting([{**x, "images": x["images"].pin_memory()} for x in _batches(6)]), dev):
        assert b["images"].device.type == "cuda" and b["targets"].device.type == b["indices"].device.type == "cpu"
        out.append((b["images"].float() * 2).cpu())  # used on the training stream
    for got, ref in zip(out, _batches(6), strict=True):
        assert torch.equal(got, ref["images"].float() * 2)
