"""EdgeFusionLib: EH-DRAN multimodal medical image fusion without any GUI.

Plain Python (torch, numpy, SimpleITK). Heavy modules are imported where they
are used so that ``import EdgeFusionLib`` stays cheap inside 3D Slicer.
"""

from pathlib import Path

__version__ = "0.1.0"

#: ``Resources/`` (bundled weights, sample data) sits beside ``EdgeFusionLib/``, in a source
#: checkout and in a Slicer installation alike.
RESOURCES_DIR = Path(__file__).resolve().parent.parent / "Resources"

CITATION = (
    "Zhou M, Zhang Y, Xu X, Wang J, Khalvati F. Edge-Enhanced Dilated Residual "
    "Attention Network for Multimodal Medical Image Fusion. IEEE BIBM 2024. arXiv:2411.11799"
)
