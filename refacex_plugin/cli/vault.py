"""``refacex vault``: work on vaults themselves (``copy`` between files and MongoDB databases)."""

from __future__ import annotations

import sys

import click

from ..errors import RefacexError
from ..keys import read_key_file
from . import _SETTINGS, _fail, main


@main.group(context_settings=_SETTINGS)
def vault() -> None:
    """Work on vaults (a file, or a MongoDB URI): copy."""


@vault.command(context_settings=_SETTINGS)
@click.argument("src")
@click.argument("dst")
@click.option("--key-file", required=True, type=click.Path(dir_okay=False), help="The key both vaults' records are sealed with.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal].")
def copy(src, dst, key_file, progress):
    """Copy every record (face regions and originals) of the vault SRC into the vault DST, creating
    DST if needed and skipping what it already holds; either may be a file or a MongoDB URI.

    Records are copied sealed (same ids, same ciphertexts) after each is authenticated with the
    key; a wrong key or a tampered record stops the copy with what was copied so far kept. Each
    image's records are written in one commit: re-run an interrupted copy to finish it.
    """
    from tqdm import tqdm

    from ..vault import copy_vault, describe, open_vault

    if src == dst:
        _fail("SRC and DST are the same vault")
    try:
        key = read_key_file(key_file)
        source = open_vault(src, key, create=False)
    except RefacexError as exc:
        _fail(str(exc))
    try:
        target = open_vault(dst, key, create=True)
    except RefacexError as exc:
        source.close()
        _fail(str(exc))
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(desc="copy", unit="img", disable=not show, file=sys.stderr, dynamic_ncols=True)
    try:
        summary = copy_vault(source, target, progress=lambda: bar.update(1))
    except RefacexError as exc:
        _fail(f"{exc}; nothing of that image was copied (what was copied before stays: re-run to go on)", code=1)
    finally:
        bar.close()
        source.close()
        target.close()
    click.echo(f"{summary.line()} from {describe(src)} to {describe(dst)}")
