"""``refacex labelstudio serve``: the Label Studio ML backend, started from the command line."""

from __future__ import annotations

import click

from . import _SETTINGS, _fail, main


@main.group(context_settings=_SETTINGS)
def labelstudio():
    """Label Studio ML backend."""


@labelstudio.command("serve", context_settings=_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9090, show_default=True)
def labelstudio_serve(host, port):
    """Serve face pre-annotations to Label Studio (see README: Label Studio).

    The anonymisation settings (REFACEX_LS_ANONYMIZE, REFACEX_KEY_FILE, REFACEX_VAULT, ...) are
    checked before it listens: settings that would fail every request stop it with one line."""
    from ..errors import RefacexError

    try:
        from labelstudio_backend._wsgi import main as serve  # creating the app checks the settings
    except ImportError as exc:
        _fail(f"the Label Studio backend needs the [labelstudio] extra and the repository's labelstudio_backend/ ({exc})")
    except RefacexError as exc:
        _fail(f"the refacex Label Studio backend cannot start: {exc}")
    serve(["--host", host, "--port", str(port)])
