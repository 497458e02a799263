"""difface's ComfyUI nodes: DifFace Model Loader, DifFace Restore Faces, DifFace Inpaint Faces (see README.md).

ComfyUI imports this folder as a package from custom_nodes/ and reads the two mappings below; difface itself is
a pip package, which these nodes import.
"""

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ModuleNotFoundError as e:
    if e.name is None or e.name.split(".")[0] != "difface":
        raise
    raise ModuleNotFoundError("difface's ComfyUI nodes need the difface package in the Python that runs ComfyUI: "
                              "install it with `pip install difface` (or pip install a clone of its repository), "
                              "then restart ComfyUI", name=e.name) from e

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
