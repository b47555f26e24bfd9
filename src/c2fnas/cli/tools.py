"""``c2fnas profile`` and ``c2fnas plot``: what an architecture costs, and how it looks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from c2fnas.cli.display import console, fail
from c2fnas.plots import plot_architecture
from c2fnas.space import Architecture, ArchitectureError

app = typer.Typer()
plot_app = typer.Typer(help="Figures.", no_args_is_help=True)
app.add_typer(plot_app, name="plot")


@app.command()
def profile(
    arch_json: Annotated[Path, typer.Argument(help="Architecture JSON file.")],
    patch: Annotated[tuple[int, int, int], typer.Option(help="Patch size D H W.")] = (96, 96, 96),
    in_channels: Annotated[int, typer.Option(help="Input modalities.")] = 1,
    classes: Annotated[int, typer.Option(help="Output classes, background included.")] = 3,
    width: Annotated[float | None, typer.Option(help="Override the width multiplier.")] = None,
    batch: Annotated[int, typer.Option(help="Batch size for memory and timing.")] = 1,
    timing: Annotated[bool, typer.Option(help="Measure forward and training-step time.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Parameters, MACs, training activation memory and measured speed of an architecture: the
    training step and sliding window `c2fnas plan` measures (accelerated, Dice + cross-entropy,
    the precision `auto` picks), on this machine."""
    from c2fnas.costs.profile import profile_architecture  # heavy: see the package docstring

    try:
        architecture = Architecture.load(arch_json)
        if width is not None:
            architecture = architecture.with_width(width)
        report = profile_architecture(architecture, patch, in_channels, classes, batch, timing)
    except (ArchitectureError, ValueError) as error:
        raise fail(str(error)) from None
    if as_json:
        print(json.dumps(report))
        return
    table = Table(title=f"{architecture.name or arch_json.name} at {'x'.join(map(str, patch))}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{report['params'] / 1e6:.2f} M")
    table.add_row("MACs (paper 'FLOPs'), per sample", f"{report['macs'] / 1e9:.2f} G")
    table.add_row(
        f"training activations, batch {batch}, fp32",
        f"{report['activation_bytes_fp32'] / 2**30:.2f} GiB",
    )
    if timing:
        where = f"{report['precision']}, {report['device']}"
        table.add_row(f"training step, batch {batch} ({where})", f"{report['step_seconds']:.3f} s")
        table.add_row("one sliding window", f"{report['window_seconds'] * 1000:.1f} ms")
    console.print(table)


@plot_app.command("arch")
def plot_arch(
    arch_json: Annotated[Path, typer.Argument(help="Architecture JSON file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG (or PDF/SVG) to write.")],
    patch: Annotated[tuple[int, int, int], typer.Option(help="Patch for the MAC count.")] = (
        96,
        96,
        96,
    ),
    in_channels: Annotated[int, typer.Option(help="Input modalities.")] = 1,
    classes: Annotated[int, typer.Option(help="Output classes.")] = 3,
) -> None:
    """Draw an architecture like the paper's Fig. 5, with parameters and MACs in the caption."""
    from c2fnas.costs.profile import profile_architecture  # heavy: see the package docstring

    try:
        architecture = Architecture.load(arch_json)
        report = profile_architecture(architecture, patch, in_channels, classes)
    except (ArchitectureError, ValueError) as error:
        raise fail(str(error)) from None
    caption = (
        f"{report['params'] / 1e6:.2f} M parameters, {report['macs'] / 1e9:.2f} G MACs at "
        f"{'x'.join(map(str, patch))}, width {architecture.width:g}"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    plot_architecture(architecture, output, caption)
    console.print(f"wrote {output}")
