"""WSGI entry point: ``python -m labelstudio_backend._wsgi --port 9090`` (or any WSGI server on ``app``)."""

from __future__ import annotations

import argparse
import logging
import os

from label_studio_ml.api import init_app

from .model import RefacexFaceBackend

app = init_app(model_class=RefacexFaceBackend, model_dir=os.environ.get("MODEL_DIR", os.path.join(os.path.dirname(__file__), "model-state")))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="refacex Label Studio ML backend")
    ap.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", 9090)))
    ap.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level)
    app.run(host=args.host, port=args.port, threaded=False)


if __name__ == "__main__":
    main()
