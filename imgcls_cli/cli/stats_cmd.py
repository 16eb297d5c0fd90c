"""`imgcls stats DATA_OR_CHECKPOINT`: data-set statistics or model statistics, as tables and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from .common import console, handle_errors, out


def _is_checkpoint(target: str) -> bool:
    p = Path(target)
    return (p.is_file() and p.suffix == ".pt") or (p.is_dir() and (p / "best.pt").is_file())


def _print_data(s: dict[str, Any]) -> None:
    t = Table(title=f"{s['data']}: {s['num_classes']} classes, {s['num_train']} train / {s['num_val']} "
                    f"{s['val_split'] or 'val'} images")
    for col in ("class", "train", s["val_split"] or "val", "bin"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for name, n in s["train_counts"].items():
        v = s["val_counts"][name] if s["val_counts"] else "-"
        t.add_row(name, str(n), str(v), "many" if n > 100 else "medium" if n >= 20 else "few")
    out.print(t)
    sz = s["sizes"]
    ratio = f"{s['imbalance_ratio']:.2f}" if s["imbalance_ratio"] else "inf (a class has no images)"
    out.print(f"imbalance ratio (max/min train count): {ratio}; bins many/medium/few (>100, 20-100, <20):"
              f" {s['bins']['many']}/{s['bins']['medium']}/{s['bins']['few']}", highlight=False, soft_wrap=True)
    out.print(f"image sizes over {s['scanned']} of {s['total_images']} images: width {sz['width']['min']}-"
              f"{sz['width']['max']} (median {sz['width']['median']:g}), height {sz['height']['min']}-"
              f"{sz['height']['max']} (median {sz['height']['median']:g}); most common "
              + ", ".join(f"{k} ({c})" for k, c in sz["most_common"][:5]), highlight=False, soft_wrap=True)
    out.print(f"channel mean {s['mean']}  std {s['std']}  (RGB, pixels/255)", highlight=False, soft_wrap=True)
    for b in s["unreadable"]:
        console.print(f"[yellow]unreadable[/yellow] {b['file']}: {b['reason']}", highlight=False, soft_wrap=True)
    if not s["unreadable"]:
        out.print(f"unreadable files: none among the {s['scanned']} scanned")


def _print_model(s: dict[str, Any]) -> None:
    out.print(f"{s['checkpoint']}: {s['backbone']} + attn {s['attn']} + head {s['head']} ({s['method']}),"
              f" {s['num_classes']} classes", highlight=False, soft_wrap=True)
    out.print(f"parameters {s['params']:,} (trainable {s['trainable_params']:,}); {s['gmacs']:.3f} GMACs"
              f" = {s['flops'] / 1e9:.3f} GFLOPs at {s['img_size']}x{s['img_size']} (MACs = FLOPs/2,"
              f" FlopCounterMode)", highlight=False, soft_wrap=True)
    t = Table(title="per stage (batch 1)")
    for col in ("stage", "params", "GMACs", "output"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for r in s["stages"]:
        shape = "x".join(map(str, r["output"] or [])) or "-"
        t.add_row(r["stage"], f"{r['params']:,}", f"{r['macs'] / 1e9:.4f}", shape)
    out.print(t)
    if s["latency"]:
        lat = s["latency"]
        out.print(f"latency on {lat['device']} ({lat['threads']} threads), batch 1: median {lat['median_ms']:.2f} ms,"
                  f" p90 {lat['p90_ms']:.2f} ms over {lat['runs']} runs after {lat['warmup']} warm-up",
                  highlight=False, soft_wrap=True)


def _lazy(module: str, name: str, option: str) -> Any:
    import importlib

    from ..errors import ImgclsError

    try:
        return getattr(importlib.import_module(module), name)
    except (ModuleNotFoundError, AttributeError):
        raise ImgclsError(f"{option}: {module}.{name} is not available in this build") from None


def stats_command(
    target: str = typer.Argument(None, metavar="DATA_OR_CHECKPOINT",
                                help="Data (folder, .h5, digits) or a checkpoint / run dir."),
    json_path: Path = typer.Option(None, "--json", help="Write the statistics as JSON here."),
    histogram: Path = typer.Option(None, "--histogram", help="DATA: bar chart of training images per class (PNG)."),
    features: Path = typer.Option(None, "--features", help="CKPT: 2-D plot of the validation embeddings (PNG)."),
    preview: Path = typer.Option(None, "--preview", help="DATA: grid of augmented training images (PNG)."),
    components: bool = typer.Option(False, "--components", help="List every registered component and exit."),
    imbalance_ratio: float = typer.Option(None, "--imbalance-ratio", help="DATA: show the long-tailed subset."),
    img_size: int = typer.Option(None, "--img-size", help="CKPT: resolution for FLOPs/latency [default: training]."),
    max_images: int = typer.Option(5000, "--max-images", help="DATA: decode at most this many (seeded sample)."),
    runs: int = typer.Option(20, "--runs", help="CKPT: timed forward passes for the latency (0 = skip)."),
    device: str = typer.Option("cpu", help="CKPT: device for latency: cpu|cuda|auto."),
) -> None:
    """Data-set statistics (counts, imbalance, sizes, mean/std, bad files) or model statistics."""
    from ..errors import ImgclsError, data_argument

    if components:
        import imgcls_cli

        for kind, names in imgcls_cli.components().items():
            out.print(f"[bold]{kind}[/bold]: {', '.join(names)}")
        if target is None:
            return
    for opt, val, low in (("--img-size", img_size, 1), ("--max-images", max_images, 1), ("--runs", runs, 0)):
        if val is not None and val < low:  # 0 or less used to fall back to the default, or crash
            raise ImgclsError(f"{opt} {val}: must be >= {low}")
    if target is None:
        raise ImgclsError("DATA_OR_CHECKPOINT: give a data set (folder, .h5, digits) or a checkpoint (.pt / run dir)")
    if _is_checkpoint(target):
        for opt, val in (("--histogram", histogram), ("--preview", preview), ("--imbalance-ratio", imbalance_ratio)):
            if val is not None:
                raise ImgclsError(f"{opt}: applies to a data set, not to the checkpoint {target}")
        from ..engine.checkpoint import checkpoint_file
        from ..stats.model import checkpoint_stats

        ckpt = checkpoint_file(target)
        s = checkpoint_stats(ckpt, img_size, device, runs)
        _print_model(s)
        if features is not None:
            _lazy("imgcls_cli.stats.features", "plot_features", "--features")(ckpt, features, data=None, split=None,
                                                                              device=device)
            out.print(f"features: {features}")
    else:
        if features is not None:
            raise ImgclsError(f"--features: needs a checkpoint (.pt or run dir), not the data set {target}")
        from ..stats.dataset import dataset_stats, histogram_png

        with data_argument("DATA_OR_CHECKPOINT"):
            s = dataset_stats(target, imbalance_ratio, max_images)
        _print_data(s)
        if histogram is not None:
            histogram_png(s, histogram)
            out.print(f"histogram: {histogram}")
        if preview is not None:
            from ..config import build_config

            ov: dict[str, Any] = {"data.path": target}
            if imbalance_ratio is not None:
                ov["data.imbalance_ratio"] = imbalance_ratio
            with data_argument("DATA_OR_CHECKPOINT"):
                _lazy("imgcls_cli.viz.preview", "preview_grid", "--preview")(build_config(None, ov), preview, n=32,
                                                                            seed=0)
            out.print(f"preview: {preview}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(s, indent=2))
        out.print(f"statistics: {json_path}")


def register(app: typer.Typer) -> None:
    app.command("stats")(handle_errors(stats_command))
