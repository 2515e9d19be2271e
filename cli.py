"""Command-line interface: thin click commands, each building a config and calling one library function.

Run `python cli.py --help` for the list of commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

REPO_ROOT = Path(__file__).resolve().parent


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Train real-world blind super-resolution models the Real-ESRGAN way."""



@main.command("preview-degradations")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--count", default=4, show_default=True, help="Degradations per image.")
@click.option("--seed", default=0, show_default=True, help="Seed of the parameter draws (same seed, same files).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Degradation config TOML (default: the paper's second-order model).")
@click.option("--order", type=int, help="Number of degradation stages (1, 2 = paper, 3, ...).")
@click.option("--scale", type=click.Choice(["1", "2", "4"]), help="Target scale (default 4).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a degradation config key, e.g. --set stages.1.blur_prob=1.0 (repeatable).")
@click.option("--stages", "show_stages", is_flag=True, help="Also show every intermediate step of each degradation.")
@click.option("--gt-size", default=400, show_default=True, help="GT patch side (the reference degrades 400x400).")
@click.option("--usm/--no-usm", default=True, show_default=True, help="Sharpen the GT first, as training does.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("preview-out"),
              show_default=True, help="Output folder for preview.png and records.json.")
def preview_degradations(images, count, seed, config_path, order, scale, overrides, show_stages, gt_size, usm, out):
    """Write a contact sheet of degraded samples with their parameters (default: the bundled photos)."""
    from degrade.tomlio import ConfigError
    from pipelines.common import resolve_degradation_config
    from pipelines.preview import PreviewConfig, preview_degradations

    try:
        degradation = resolve_degradation_config(config_path, order=order, scale=int(scale) if scale else None,
                                                 overrides=overrides)
        result = preview_degradations(PreviewConfig(images=tuple(images), count=count, seed=seed, gt_size=gt_size,
                                                    usm=usm, show_stages=show_stages, out=out,
                                                    degradation=degradation))
    except (ConfigError, FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"wrote {result.sheet} ({result.tiles} degraded tiles) and {result.records}")


if __name__ == "__main__":
    sys.exit(main())
