"""The ``refacex`` command line. Every command is a thin shell over the core API.

This module holds the command group and what every command shares; the commands live by job in
:mod:`.files` (anonymise, extract, recover, keygen), :mod:`.vault` (vault copy), :mod:`.models`
(donor banks, training, export, the model zoo, info), :mod:`.bench` and :mod:`.labelstudio`.
Models and torch are imported inside the commands, so ``refacex --help`` answers at once.
"""

from __future__ import annotations

import sys

import click

from .. import __version__

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


#: The names ``--method`` accepts, in ``anonymisers.PREFERENCE`` order. Spelled out here because
#: the registry imports torch and probes the models, and help must print without either
#: (tests/test_cli.py checks the two lists agree).
METHOD_NAMES = ("refacex", "generator", "pixelate", "blur", "mask")


def _fail(msg: str, code: int = 2) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


@click.group(context_settings=_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="refacex")
def main() -> None:
    """refacex - reversible, donor-driven face anonymisation for image datasets.

    \b
    Typical use:
      refacex anonymise photos/ -o anonymised/ --recursive
      refacex keygen -o admin.key
      refacex anonymise photos/ -r --in-place --key-file admin.key --vault faces.vault
      refacex recover photos/ -r --key-file admin.key --vault faces.vault -o restored/
    """


# Each command module registers its commands on ``main`` as it loads, with the names above.
from . import bench, files, labelstudio, models, vault  # noqa: E402, F401
