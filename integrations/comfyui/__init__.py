"""difface's ComfyUI nodes: DifFace Model Loader, DifFace Restore Faces, DifFace Inpaint Faces (see README.md).

ComfyUI imports this folder as a package from custom_nodes/ and reads the two mappings below; difface itself is
a pip package (`pip install difface`), which these nodes import.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
