"""refacex Label Studio ML backend: face boxes and landmarks as pre-annotations, optionally on
anonymised media. Run it with ``refacex labelstudio serve`` or ``python -m labelstudio_backend._wsgi``."""
