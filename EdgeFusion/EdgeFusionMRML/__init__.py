"""MRML layer of the EdgeFusion Slicer module, without Qt.

Everything here works with the MRML libraries alone (inside the Slicer desktop
application, or with the ``slicer-core`` wheel in CI): converting volume nodes to
SimpleITK images and back, validating inputs, running EdgeFusionLib, placing the
result in the scene and in the slice views. The Qt widget in ``EdgeFusion.py``
only wires this to the GUI.

This folder is a package (not loose ``.py`` files beside ``EdgeFusion.py``) because
Slicer tries to load every ``.py`` file in a module folder as a module.
"""
