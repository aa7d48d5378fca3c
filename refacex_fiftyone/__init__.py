"""refacex for FiftyOne datasets in Python: ``import refacex_fiftyone.api as rfo``.

A front end beside the FiftyOne plugin (``fiftyone_plugin/``, whose operators call it); like the
other front ends it only calls the core's use cases (:mod:`refacex_plugin.api`), and no core
module imports it.
"""
