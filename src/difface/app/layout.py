"""The app's page: a Gradio Blocks with a Restore tab and an Inpaint tab, and how it is served.

    demo = build_app(AppServer(device="auto"))
    app, url = launch(demo, "127.0.0.1", 7860, block=False)

Every event runs with preprocess=False (the upload reaches difface's reader as it is) and calls an
`AppServer` handler (`difface.app.handlers`); one job runs at a time, the others see their place in the queue.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gradio as gr

from difface.app.handlers import (
    KEEP_RESULTS_S,
    MODES,
    SEED,
    START_CHOICES,
    AppServer,
    InpaintForm,
    RestoreForm,
    check_upload,
    mask_from_editor,
    payload_path,
    refuse,
)
from difface.config import SAMPLERS, OptionError
from difface.images import ImageReadError

# Largest upload Gradio accepts (its own check, before our pixel limit reads the header): a 50 MP
# PNG, the default pixel limit, is 75 to 150 MB.
MAX_FILE_SIZE = "200mb"


# -- the page ----------------------------------------------------------------------------------------
INTRO = """# difface
Blind face restoration and inpainting with **DifFace**, running on this machine: nothing is uploaded
anywhere. Every setting is that of `difface restore` / `difface inpaint`; the same settings and seed give
the same pixels as the command line, and the log line says which command."""
# The scripting API's parameters after the image (and the mask), in the order of its `restore` / `inpaint`: an app
# option joins the API only when added here and to that function
API_RESTORE = ("mode", "model", "start", "start_custom", "eta", "sampler", "nfe", "seed", "upscale")
API_INPAINT = ("model", "start", "start_custom", "eta", "sampler", "nfe", "seed")


def build_app(server: AppServer) -> gr.Blocks:
    """The Gradio page: a Restore tab and an Inpaint tab (or why inpainting is not available)."""
    with gr.Blocks(title="difface", analytics_enabled=False, delete_cache=(600, KEEP_RESULTS_S)) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Restore", id="restore"):
            _restore_tab(server)
        with gr.Tab("Inpaint", id="inpaint"):
            _inpaint_tab(server)
    return demo


def _progress_reporter(progress: gr.Progress) -> Callable[[float, str], None]:
    return lambda frac, text: progress(frac, desc=text)


def _sampling_controls(server: AppServer, task: str, labels: list[str], starts: tuple[str, ...], prefix: str):
    eta0, start0, about = server.defaults(labels[0], task)
    model = gr.Dropdown(labels, value=labels[0], label="model", elem_id=f"{prefix}_model")
    about_md = gr.Markdown(about, elem_id=f"{prefix}_about")
    with gr.Row():
        start = gr.Radio(list(starts), value="model default", label="start step",
                         info="where the estimate is diffused to; larger: more realistic, less faithful",
                         elem_id=f"{prefix}_start")
        start_custom = gr.Number(value=start0, precision=0, minimum=0, label="custom start step (of ddim250)",
                                 elem_id=f"{prefix}_start_custom")
    eta = gr.Slider(0.0, 1.0, value=eta0, step=0.05, label="eta", info="DDIM eta: lower is more faithful",
                    elem_id=f"{prefix}_eta")
    with gr.Row():
        sampler = gr.Dropdown(list(SAMPLERS), value="official", label="sampler", elem_id=f"{prefix}_sampler",
                              info="official: one network evaluation per step; ddim / dpmpp2m: NFE evaluations")
        nfe = gr.Number(value=10, precision=0, minimum=1, label="NFE (ddim / dpmpp2m)", interactive=False,
                        elem_id=f"{prefix}_nfe")
    seed = gr.Number(value=SEED, precision=0, label="seed", elem_id=f"{prefix}_seed")

    def on_model(label, progress=gr.Progress()):
        progress(0.0, desc=f"loading {label}")
        try:
            eta_d, start_d, text = server.defaults(label, task)
        except (FileNotFoundError, ValueError, OptionError) as e:
            raise refuse(f"{label} cannot be loaded: {e}") from None
        return gr.update(value=eta_d), gr.update(value=start_d), text

    model.change(on_model, model, [eta, start_custom, about_md], concurrency_id="model", api_visibility="private")
    sampler.change(lambda s: gr.update(interactive=s != "official"), sampler, nfe, queue=False,
                   api_visibility="private")
    return model, start, start_custom, eta, sampler, nfe, seed


def _restore_tab(server: AppServer) -> None:
    labels = list(server.restore_models)
    starts = START_CHOICES if server.auto else tuple(c for c in START_CHOICES if c != "auto")
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.Image(type="filepath", image_mode=None, format="png", label="photo or aligned face",
                              sources=["upload", "clipboard"], elem_id="restore_input", height=320)
            mode = gr.Radio(list(MODES), value=MODES[0], label="input",
                            info="whole photo: faces are found, restored and pasted back; aligned face: a face "
                            "crop on the FFHQ template", elem_id="restore_mode")
            model, start, start_custom, eta, sampler, nfe, seed = _sampling_controls(
                server, "restoration", labels, starts, "restore")
            upscale = gr.Slider(1, 8, value=2, step=1, label="upscale (whole photos)", elem_id="restore_upscale")
            run = gr.Button("Restore", variant="primary", elem_id="restore_run")
        with gr.Column(scale=2):
            slider = gr.ImageSlider(label="before / after", format="png", type="numpy", elem_id="restore_slider",
                                    interactive=False, max_height=640)
            log_box = gr.Textbox(label="log", lines=3, interactive=False, elem_id="restore_log")
            download = gr.DownloadButton("Download the result (PNG)", value=None, visible=True,
                                         interactive=False, elem_id="restore_download")
            faces = gr.Gallery(label="faces: found and restored (photos) / input, estimate, result (aligned)",
                               format="png", columns=4, height="auto", object_fit="contain", fit_columns=False,
                               elem_id="restore_faces",
                               interactive=False)

    # the page's widgets after the image, keyed by RestoreForm's fields (an app option: a widget here, a field there)
    fields = {"mode": mode, "model": model, "start": start, "start_custom": start_custom, "eta": eta,
              "sampler": sampler, "nfe": nfe, "seed": seed, "upscale": upscale}

    def on_restore(image, *values, progress=gr.Progress()):
        form = RestoreForm(**dict(zip(fields, values)))
        out = server.restore(payload_path(image), form, report=_progress_reporter(progress))
        if out["message"]:
            gr.Warning(out["message"])
        return out["slider"], out["log"], gr.update(value=out["file"], interactive=True), out["faces"]

    inputs = [upload, *fields.values()]
    run.click(on_restore, inputs, [slider, log_box, download, faces], concurrency_id="model", preprocess=False,
              api_visibility="private")

    # The scripting API (gradio_client): plain values in, a file path and the log line out (README, "The app's API").
    api_file = gr.File(visible=False, label="result")
    api_log = gr.Textbox(visible=False, label="log")

    def restore(image, mode="whole photo", model=None, start_step="model default", custom_start_step=None,
                eta=None, sampler="official", nfe=None, seed=SEED, upscale=2, progress=gr.Progress()):
        """Restore a photo (mode "whole photo") or an aligned face (mode "aligned face") as `difface restore`
        would: returns (the restored PNG, the log line naming the same command)."""
        form = RestoreForm(model or labels[0], start_step, custom_start_step, eta, sampler, nfe, seed, mode=mode,
                           upscale=upscale)
        out = server.restore(payload_path(image), form, report=_progress_reporter(progress))
        return out["file"], out["log"]

    api_inputs = [upload, *map(fields.get, API_RESTORE)]
    gr.Button(visible=False).click(restore, api_inputs, [api_file, api_log], api_name="restore",
                                   concurrency_id="model", preprocess=False)


def _inpaint_tab(server: AppServer) -> None:
    if server.inpaint_unavailable:
        gr.Markdown("**Inpainting is not available** in this app: " + server.inpaint_unavailable.strip()
                    .replace("\n", "; ") + "\n\nStart the app with `--inpaint-prior FILE --inpaint-estimator FILE` "
                    "to serve your own inpainting model (`difface train inpainter`), or download the official "
                    "one: `difface weights download iddpm-ffhq256 lama-inpainting256`.",
                    elem_id="inpaint_unavailable")
        return
    labels = list(server.inpaint_models)
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.Image(type="filepath", image_mode=None, format="png", label="aligned face",
                              sources=["upload", "clipboard"], elem_id="inpaint_input", height=240)
            editor = gr.ImageEditor(label="paint the missing region (white brush)", type="numpy", format="png",
                                    sources=[], transforms=[], layers=False, elem_id="inpaint_editor",
                                    brush=gr.Brush(default_size=12, colors=["#ffffff"], color_mode="fixed"),
                                    eraser=gr.Eraser(default_size=12), height=420, canvas_size=(512, 512))
            mask_upload = gr.Image(type="filepath", image_mode=None, format="png",
                                   label="or a mask (white = missing; optional)", sources=["upload"],
                                   elem_id="inpaint_mask", height=160)
            model, start, start_custom, eta, sampler, nfe, seed = _sampling_controls(
                server, "inpainting", labels, ("model default", "custom"), "inpaint")
            run = gr.Button("Inpaint", variant="primary", elem_id="inpaint_run")
        with gr.Column(scale=2):
            slider = gr.ImageSlider(label="before / after", format="png", type="numpy", elem_id="inpaint_slider",
                                    interactive=False, max_height=640)
            log_box = gr.Textbox(label="log", lines=3, interactive=False, elem_id="inpaint_log")
            with gr.Row():
                download = gr.DownloadButton("Download the result (PNG)", interactive=False,
                                             elem_id="inpaint_download")
                download_mask = gr.DownloadButton("Download the mask (PNG)", interactive=False,
                                                  elem_id="inpaint_download_mask")
            panels = gr.Gallery(label="input, estimate, result", format="png", columns=3, height="auto",
                                object_fit="contain", fit_columns=False, elem_id="inpaint_panels", interactive=False)

    def on_upload(upload_v):
        path = payload_path(upload_v)
        if not path:
            return None
        why = check_upload(path, server.max_pixels)  # only a usable image goes to the editor
        if why:  # the Inpaint button names the problem again
            gr.Warning(why)
            return None
        return {"background": path, "layers": [], "composite": None}

    upload.change(on_upload, upload, editor, concurrency_limit=None, api_visibility="private", preprocess=False)

    fields = {"model": model, "start": start, "start_custom": start_custom, "eta": eta, "sampler": sampler,
              "nfe": nfe, "seed": seed}  # keyed by InpaintForm's fields (an app option: a widget and a field)

    def on_inpaint(image, edited, mask_v, *values, progress=gr.Progress()):
        try:
            painted = mask_from_editor(edited)
        except ImageReadError as e:
            raise refuse(f"the painted layer cannot be read: {e}") from None
        form = InpaintForm(**dict(zip(fields, values)))
        out = server.inpaint(payload_path(image), painted, payload_path(mask_v), form,
                             report=_progress_reporter(progress))
        mask_btn = gr.update(value=out["mask"], interactive=out["mask"] is not None)
        return out["slider"], out["log"], gr.update(value=out["file"], interactive=True), mask_btn, out["faces"]

    run.click(on_inpaint, [upload, editor, mask_upload, *fields.values()],
              [slider, log_box, download, download_mask, panels], concurrency_id="model", preprocess=False,
              api_visibility="private")

    api_file = gr.File(visible=False, label="result")
    api_mask = gr.File(visible=False, label="mask")
    api_log = gr.Textbox(visible=False, label="log")

    def inpaint(image, mask=None, model=None, start_step="model default", custom_start_step=None, eta=None,
                sampler="official", nfe=None, seed=SEED, progress=gr.Progress()):
        """Inpaint an aligned face as `difface inpaint` would; the missing region is the white area of `mask`
        (optional: without one, the black pixels of the image). Returns (the PNG, the mask PNG or None, the log)."""
        form = InpaintForm(model or labels[0], start_step, custom_start_step, eta, sampler, nfe, seed)
        out = server.inpaint(payload_path(image), None, payload_path(mask), form, report=_progress_reporter(progress))
        return out["file"], out["mask"], out["log"]

    gr.Button(visible=False).click(inpaint, [upload, mask_upload, *map(fields.get, API_INPAINT)],
                                   [api_file, api_mask, api_log], api_name="inpaint", concurrency_id="model",
                                   preprocess=False)


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, *, block: bool = True,
           auth: Callable[[str, str], bool] | None = None, max_file_size: str = MAX_FILE_SIZE):
    """Serve the page: one job at a time (the others see their place in the queue), no SSR node server,
    uploads up to max_file_size (refused by the server, before storing, beyond it); `auth` ((user, password) ->
    bool): every page, API call and file needs a login. Returns (app, local_url) when block is False."""
    # Gradio asks this variable (at call time) before each version check and telemetry report: an offline app
    # makes neither. Set here, when the app starts serving, not when difface.app is imported.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    demo.queue(default_concurrency_limit=1)
    app, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                              inbrowser=False, share=False, ssr_mode=False, max_file_size=max_file_size,
                              show_error=True, pwa=False, mcp_server=False, enable_monitoring=False, auth=auth,
                              auth_message="difface: log in with the user and password the app was started with")
    if block:
        demo.block_thread()
    return app, url
