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


if __name__ == "__main__":
    sys.exit(main())
