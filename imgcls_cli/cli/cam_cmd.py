"""`imgcls cam IMAGE...`: activation-map overlays (PNG), a grid, and optionally raw .npy maps."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.table import Table

from .common import console, handle_errors, out


def _checkpoint_path(checkpoint: Path | None) -> Path:
    from ..engine.checkpoint import checkpoint_file
    from ..engine.rundir import latest_run
    from ..errors import ImgclsError

    if checkpoint is None:
        run = latest_run("runs")
        if run is None or not (run / "best.pt").is_file():
            raise ImgclsError("--checkpoint: no trained run found in runs/; train first (imgcls train) or pass "
                              "--checkpoint CKPT")
        return run / "best.pt"
    return checkpoint_file(checkpoint, "--checkpoint")


def cam_command(
    images: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c",
                                    help="Checkpoint (.pt) or run directory [default: the latest run's best.pt]."),
    method: str = typer.Option("gradcam", help="cam|gradcam|gradcam++|layercam (any registered CAM method)."),
    target_class: str = typer.Option(None, "--target-class", help="Class index or name [default: the prediction]."),
    topk: int = typer.Option(1, "--topk", help="Maps for the top-N predicted classes."),
    layer: str = typer.Option(None, "--layer", help="Dotted module name [default: the last conv stage]."),
    out_dir: Path = typer.Option(Path("cam"), "--out", help="Output folder."),
    save_raw: bool = typer.Option(False, "--save-raw", help="Also write each map as .npy at the image's H x W."),
    cmap: str = typer.Option("jet", "--cmap", help="matplotlib colour map (jet, turbo, inferno, ...)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Heat-map opacity in [0, 1]."),
    device: str = typer.Option("auto", help="auto|cpu|cuda."),
) -> None:
    """Class activation maps (CAM, Grad-CAM, ...) of a trained checkpoint over images."""
    import numpy as np

    from ..config import load_components
    from ..engine.checkpoint import load_checkpoint
    from ..engine.device import resolve_device
    from ..errors import ImgclsError
    from ..registry import CAM_METHODS
    from ..viz.explain import UnreadableImage, collect_images, explain_file, parse_class
    from ..viz.overlay import blend, colorize, save_grid, save_overlay

    load_components()
    CAM_METHODS.get(method)
    if target_class is not None and topk != 1:
        raise ImgclsError("--target-class and --topk: give one of them (a fixed class, or the top-N predictions)")
    colorize(np.zeros((1, 1)), cmap)  # validates --cmap before any work
    if not 0.0 <= alpha <= 1.0:
        raise ImgclsError(f"--alpha: must be in [0, 1], got {alpha}")
    files = collect_images(images)
    dev = resolve_device(device)
    ckpt = load_checkpoint(_checkpoint_path(checkpoint), dev)
    classes = None if target_class is None else [parse_class(target_class, ckpt.class_names)]
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = re.sub(r"[^\w.-]", "p", method)  # gradcam++ -> gradcampp
    table = Table(title=f"{method} maps from {ckpt.path}")
    for col in ("image", "H x W", "predicted", "map of", "written"):
        table.add_column(col)
    panels: list[tuple[np.ndarray, str]] = []
    used: set[str] = set()
    skipped: list[str] = []
    said: set[str] = set()
    for f in files:
        try:
            ex = explain_file(f, ckpt, method, classes, topk, layer, dev)
        except UnreadableImage as e:  # as training does: the other images are still explained
            skipped.append(str(e))
            console.print(f"[yellow]skipped unreadable image[/yellow] {e}", highlight=False, soft_wrap=True)
            continue
        for note in ex.notes():
            if note not in said:  # the layer note is the same for every image: once
                said.add(note)
                console.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
        stem, i = f.stem, 2
        while stem.casefold() in used:  # photo.JPG and photo.png: one file on macOS / Windows file systems
            stem, i = f"{f.stem}-{i}", i + 1
        used.add(stem.casefold())
        for rank, m in enumerate(ex.maps, 1):
            safe = re.sub(r"[^\w.-]", "_", m.name)
            suffix = f"_{tag}" if len(ex.maps) == 1 else f"_{tag}_top{rank}_{safe}"
            png = out_dir / f"{stem}{suffix}.png"
            caption = f"pred: {ex.pred_name} ({ex.pred_prob:.2f}) | map: {m.name} ({m.prob:.2f}) [{method}]"
            over = blend(ex.image, m.heat, alpha, cmap)
            save_overlay(png, over, caption)
            written = [png.name]
            if save_raw:
                np.save(out_dir / f"{stem}{suffix}.npy", m.heat)
                written.append(f"{stem}{suffix}.npy")
            panels.append((over, f"{f.name}\n{caption}"))
            h, w = ex.image.shape[:2]
            table.add_row(str(f), f"{h} x {w}", f"{ex.pred_name} ({ex.pred_prob:.2f})", f"{m.name} ({m.prob:.2f})",
                          ", ".join(written))
    if not panels:
        raise ImgclsError(f"IMAGE: none of the {len(files)} file(s) could be read ({skipped[0]})")
    out.print(table)
    if len(panels) > 1:
        save_grid(out_dir / f"grid_{tag}.png", panels)
        console.print(f"grid: {out_dir / f'grid_{tag}.png'}")
    console.print(f"wrote {len(panels)} overlay(s) to {out_dir}"
                  + (f"; skipped {len(skipped)} unreadable file(s)" if skipped else ""))


def register(app: typer.Typer) -> None:
    app.command("cam")(handle_errors(cam_command))
