"""``python -m refacex_plugin.cli``: the ``refacex`` command."""

from . import main

if __name__ == "__main__":
    main()
