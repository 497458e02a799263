"""difface: DifFace blind face restoration (Yue & Loy, TPAMI 2024, arXiv 2212.06512)."""

__version__ = "0.1.0"
