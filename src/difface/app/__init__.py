"""`difface app`: a local web app (Gradio) for restoring and inpainting faces.

    from difface.app import AppServer, build_app, launch
    server = AppServer(device="auto")                      # loads the bundled model(s)
    demo = build_app(server)                               # a gr.Blocks with the Restore and Inpaint tabs
    launch(demo, "127.0.0.1", 7860)                        # one job at a time, the others queued

What a user can count on: the app runs the pipeline of `difface restore` / `difface inpaint` on the
uploaded file as it is (read by the same reader, never re-encoded by the browser or by Gradio), so
the same settings and seed give the same pixels, and the PNG offered for download is byte for byte
the file the command writes. Nothing is fetched from the internet (no CDN, no web fonts, analytics
off); one job runs at a time and the others wait in a visible queue; a bad upload gives a readable
message and the app goes on serving.

The models are injectable (`AppServer(restore_models=..., inpaint_models=...)`, or `--prior/--estimator`
and `--inpaint-prior/--inpaint-estimator` of the command), so an app can serve any weights files.

Three modules, one concern each: `catalogue` (the models offered and their loading; no Gradio import, so
`difface.app.catalogue` works without the app's extra), `handlers` (`AppServer`: the requests, which call a
pipeline's in-memory method with a progress callback) and `layout` (the Gradio page and `launch`). The names of
`handlers` and `layout` are imported from here on first use (they need Gradio).
"""

from __future__ import annotations

import importlib

from difface.app.catalogue import (
    BUNDLED,
    ModelCatalogue,
    ModelChoice,
    UnknownModel,
    autostart_available,
    default_models,
    official_models,
)

# name -> the module of this package that defines it (imported on first use: it needs Gradio)
_NEEDS_GRADIO = {"AppServer": "handlers", "mask_from_editor": "handlers", "MODES": "handlers",
                 "START_CHOICES": "handlers", "SEED": "handlers", "KEEP_RESULTS_S": "handlers",
                 "build_app": "layout", "launch": "layout", "INTRO": "layout", "MAX_FILE_SIZE": "layout"}

__all__ = ["BUNDLED", "ModelCatalogue", "ModelChoice", "UnknownModel", "autostart_available", "default_models",
           "official_models", *_NEEDS_GRADIO]


def __getattr__(name: str):
    """The Gradio-dependent names (ImportError naming Gradio when it is not installed)."""
    if name not in _NEEDS_GRADIO:
        raise AttributeError(f"module 'difface.app' has no attribute {name!r}")
    module = importlib.import_module(f"difface.app.{_NEEDS_GRADIO[name]}")
    return getattr(module, name)
