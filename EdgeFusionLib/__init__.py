"""EdgeFusionLib: EH-DRAN multimodal medical image fusion without any GUI.

Plain Python (torch, numpy, SimpleITK). Heavy modules are imported where they
are used so that ``import EdgeFusionLib`` stays cheap inside 3D Slicer.
"""

__version__ = "0.1.0"

CITATION = (
    "Zhou M, Zhang Y, Xu X, Wang J, Khalvati F. Edge-Enhanced Dilated Residual "
    "Attention Network for Multimodal Medical Image Fusion. IEEE BIBM 2024. arXiv:2411.11799"
)
