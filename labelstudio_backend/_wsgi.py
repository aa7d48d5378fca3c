"""WSGI entry point: ``python -m labelstudio_backend._wsgi --port 9090`` (or any WSGI server on ``app``).

label-studio-ml's own views answer ``/predict`` with a 500 until ``/setup`` has been called and
put a Python traceback in every error body. Label Studio sends the labeling config with each
``/predict``, so ours load the model on demand and refuse a request without one (400), and every
error is ``{"status", "detail"}`` with a one-line message and a status code that says whose fault
it is (the traceback goes to the log).

The anonymisation settings (``REFACEX_LS_ANONYMIZE``, ``REFACEX_KEY_FILE``, ``REFACEX_VAULT``, ...)
are checked when the app is created (:func:`create_app`, run on import): a backend that would
refuse every request does not start (:class:`.config.BackendConfigError`, one line).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from flask import jsonify, request
from label_studio_ml.api import init_app
from label_studio_ml.model import LabelStudioMLManager as Manager
from label_studio_tools.core.utils.exceptions import LabelStudioXMLSyntaxErrorSentryIgnored as XMLSyntaxError
from werkzeug.exceptions import HTTPException

from refacex_plugin.errors import RefacexError

from .config import BackendConfigError, LabelConfigError, check_settings, parse_label_config
from .model import MODEL_VERSION, RefacexFaceBackend

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(status: int, detail: str):
    return jsonify({"status": status, "detail": _one_line(detail)}), status


def _body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _loaded_model():
    return Manager._current_model or None  # label-studio-ml v2 keeps one model for all projects


def predict():
    data = _body()
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ApiError(400, "'tasks' must be a list of task objects")
    label_config = data.get("label_config")
    if not label_config:  # never an earlier request's or /setup's: the cached model may be another project's
        raise ApiError(400, "no labeling config: send the project's 'label_config' with each /predict (Label Studio does)")
    parse_label_config(label_config)  # an unusable config is the request's fault, before any model loads
    model = _loaded_model()
    if model is None:
        model = Manager.fetch(data.get("project"), label_config)
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    predictions = model.model.predict(tasks, **params)
    return jsonify({"results": predictions, "model_version": model.model_version})


def setup():
    data = _body()
    model = Manager.fetch(
        data.get("project"),
        data.get("schema"),
        data.get("force_reload", False),
        hostname=data.get("hostname", ""),
        access_token=data.get("access_token", ""),
        model_version=data.get("model_version"),
    )
    return jsonify({"model_version": model.model_version})


def webhook():
    data = _body()
    event = data.pop("action", None)
    if not event:
        raise ApiError(400, "webhook body has no 'action'")
    return jsonify(Manager.webhook(event, data)), 201


def train():
    """Label Studio before 1.4.1 trained through /train; refacex does not train from annotations."""
    _body()
    return jsonify({"model_version": MODEL_VERSION, "trained": False, "reason": "refacex does not train from annotations"})


def is_training():
    return jsonify({"is_training": False, "model_version": MODEL_VERSION})


def versions():
    project = _body().get("project")
    if project is None:
        raise ApiError(400, "no 'project' given")
    return jsonify({"versions": list(Manager._get_models_from_workdir(project)), "model_dir": Manager.model_dir})


_VIEWS = {
    "_predict": predict,
    "_setup": setup,
    "webhook": webhook,
    "_train": train,
    "_is_training": is_training,
    "get_version": versions,
}


def _handle(exc: Exception):
    if isinstance(exc, ApiError):
        return _error(exc.status, str(exc))
    if isinstance(exc, HTTPException):
        return _error(exc.code or 500, exc.description or exc.name)
    if isinstance(exc, LabelConfigError):
        return _error(422, str(exc))
    if isinstance(exc, XMLSyntaxError):
        return _error(422, f"labeling config is not valid XML ({exc})")
    if isinstance(exc, RefacexError):  # the backend's own setup (model, detector, method) is at fault
        logger.error("%s %s: %s", request.method, request.path, exc)
        return _error(500, str(exc))
    logger.error("%s %s failed", request.method, request.path, exc_info=exc)
    return _error(500, f"internal error ({type(exc).__name__}: {exc}); the backend's log has the details")


def create_app(env=os.environ):
    """The backend's Flask app, after checking the anonymisation settings in ``env``
    (:func:`.config.check_settings`): raises :class:`.config.BackendConfigError`, one line, when
    they could not work, so a misconfigured backend fails at start-up rather than at its first /predict."""
    check_settings(env)
    flask_app = init_app(
        model_class=RefacexFaceBackend, model_dir=env.get("MODEL_DIR", os.path.join(os.path.dirname(__file__), "model-state"))
    )
    flask_app.view_functions.update(_VIEWS)
    # Replaces label-studio-ml's handlers too (they answer some errors in plain text).
    for cls in {Exception, HTTPException, *flask_app.error_handler_spec[None][None]}:
        flask_app.register_error_handler(cls, _handle)
    return flask_app


try:
    app = create_app()
except BackendConfigError as exc:
    if __name__ != "__main__":
        raise
    sys.exit(f"error: the refacex Label Studio backend cannot start: {exc}")


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
