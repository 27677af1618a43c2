"""Fusion of MRML volume nodes with EdgeFusionLib, usable without the GUI.

A run has three steps, so that the long middle one can also happen in a
background process (see :mod:`EdgeFusionMRML.background`):

1. :meth:`VolumeFusionLogic.prepare` checks the inputs and copies everything the
   fusion needs out of the scene (voxels, geometry, colours) into a :class:`FusionJob`;
2. :meth:`VolumeFusionLogic.run` aligns the other image to the MRI when the job says so, and fuses
   the two (``EdgeFusionLib.fusion.pipeline.fuse_images``);
3. :meth:`VolumeFusionLogic.finish` writes the fused image into a volume node and, after an
   alignment, adds the registration as a linear transform node with a copy of the other volume
   under it (so it can be inspected or adjusted in the Transforms module).

Only step 3 changes the scene, and only after the fusion succeeded: a run that
fails or is cancelled leaves the scene exactly as it was. Input nodes are never
modified; parent transforms are hardened on copies that never enter the scene.
:meth:`VolumeFusionLogic.fuse` does the three steps in one call.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from . import environment, volumes

environment.ensure_library_importable()
# The modality table (names, labels, DICOM codes, colour) is EdgeFusionLib's; it imports nothing heavy.
from EdgeFusionLib.modality import MODALITIES, Modality  # noqa: E402

#: Anatomical slice planes and the RAS axis that is normal to each.
PLANE_NORMAL_RAS_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}

#: The colour table of a greyscale SPECT/PET that is displayed in grey (see ``fusion_colour_node``).
DEFAULT_COLOUR_TABLE_NAME = "PET-Heat"
GREY_COLOUR_TABLE_NAME = "Grey"

#: Attribute names recording how a fused volume was made (saved with the scene).
ATTRIBUTE_PREFIX = "EdgeFusion."

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]


@dataclasses.dataclass
class FusionJob:
    """Everything one fusion needs, copied out of the scene before the work starts.

    The images are in the MRI's frame (the coordinate system of the MRI's IJKToRAS,
    below its parent transform), in SimpleITK's LPS convention.
    """

    mri_node_id: str
    other_node_id: str
    output_node_id: str | None  # None: create a new volume node
    output_name: str
    modality: str  # "ct" | "spect" | "pet"
    mri_image: object  # SimpleITK.Image, scalar
    other_image: object  # SimpleITK.Image, scalar, or RGB for colour SPECT/PET
    options: object  # EdgeFusionLib.fusion.options.FusionOptions (colour table, range, registration included)
    colour_name: str | None = None  # name of the colour node the table came from
    registration_reason: str = ""  # why options.registration ('none', 'rigid', 'affine') was chosen

    @property
    def produces_rgb(self) -> bool:
        return MODALITIES[self.modality].shown_in_colour


@dataclasses.dataclass
class FusionResult:
    """What :meth:`VolumeFusionLogic.run` (or a worker process) gives back for :meth:`VolumeFusionLogic.finish`."""

    image: object  # the fused SimpleITK image, on the MRI's grid
    transform: object = None  # SimpleITK transform from the MRI's frame to the other's, when it was aligned
    registration_summary: str = ""  # one line: kind, metric, rotation, translation, time


def modality_entry(modality: str | None) -> Modality | None:
    """The table entry for 'CT' / 'ct' / ' Ct '; None for None or unknown names."""
    return MODALITIES.get((modality or "").strip().lower())


def as_sentence(text: str) -> str:
    """'the MRI is empty' -> 'The MRI is empty.' (EdgeFusionLib's messages are clauses; the GUI shows sentences)."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


class VolumeFusionLogic:
    """Fuses an MRI volume node with a CT, SPECT or PET volume node.

    :param scene: the vtkMRMLScene to work in; ``slicer.mrmlScene`` when None.
    :param application_logic: gives the slice logics used to fit the slice views;
        ``slicer.app.applicationLogic()`` inside Slicer, or None to leave views unfitted.
    """

    def __init__(self, scene=None, application_logic=None):
        self._scene = scene
        self.application_logic = application_logic

    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    # ---------------------------------------------------------------- inputs

    def validate_inputs(self, mri_node, other_node, modality: str | None, output_node=None) -> str | None:
        """Why these inputs cannot be fused, as one sentence for the user; None when they can.

        Cheap (no voxel is read), so the GUI calls it on every change to enable Apply.
        """
        other_modality = modality_entry(modality)
        if mri_node is None:
            return "Select an MRI volume."
        if other_node is None:
            return "Select a CT, SPECT or PET volume to fuse with the MRI."
        if other_modality is None:
            return "Choose the modality of the second volume: " + ", ".join(entry.label for entry in MODALITIES.values()) + "."
        if mri_node is other_node or (mri_node.GetID() is not None and mri_node.GetID() == other_node.GetID()):
            return "The MRI and the second volume are the same volume; select two different volumes."
        label = other_modality.label
        for node, role in ((mri_node, "MRI"), (other_node, label)):
            problem = self._volume_problem(node, role)
            if problem:
                return problem
        problem = self._dicom_modality_problem(mri_node, other_node, other_modality)
        if problem:
            return problem
        mri_components = volumes.number_of_components(mri_node)
        if mri_components != 1:
            return f"The MRI '{mri_node.GetName()}' has {mri_components} values per voxel; select a greyscale (single-component) MRI."
        other_components = volumes.number_of_components(other_node)
        if not other_modality.shown_in_colour and other_components != 1:
            return f"The {label} '{other_node.GetName()}' has {other_components} values per voxel; select a greyscale {label}."
        if other_modality.shown_in_colour and other_components not in (1, 3):
            return f"The {label} '{other_node.GetName()}' has {other_components} values per voxel; select a greyscale or RGB volume."
        if not self._overlap(mri_node, other_node):
            return (
                f"'{mri_node.GetName()}' and '{other_node.GetName()}' do not overlap in space; "
                "check that they belong to the same patient and register them first."
            )
        if output_node is not None:
            return self._output_problem(output_node, (mri_node, other_node), other_modality)
        return None

    @staticmethod
    def _volume_problem(node, role: str) -> str | None:
        if node.IsA("vtkMRMLLabelMapVolumeNode"):
            return f"The {role} '{node.GetName()}' is a label map (segmentation), not an image; select an image volume."
        # Tensor (DTI) and diffusion-weighted volumes derive from scalar volumes but are not images to
        # fuse; vector (RGB) volumes derive from tensor volumes and are.
        not_an_image = any(node.IsA(name) for name in ("vtkMRMLTensorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode"))
        if not node.IsA("vtkMRMLScalarVolumeNode") or (not_an_image and not node.IsA("vtkMRMLVectorVolumeNode")):
            return f"The {role} '{node.GetName()}' is a {node.GetClassName()}; select a scalar or RGB image volume."
        image = node.GetImageData()
        if image is None or image.GetNumberOfPoints() == 0 or min(image.GetDimensions()) < 1 or image.GetPointData().GetScalars() is None:
            return f"The {role} '{node.GetName()}' is empty (it has no voxel values)."
        return None

    def _dicom_modality_problem(self, mri_node, other_node, modality: Modality) -> str | None:
        """Whether the DICOM Modality tags contradict the slots or the chosen modality (names are only hints)."""
        environment.ensure_library_importable()
        from EdgeFusionLib.modality import MRI_DICOM_CODE, modality_of_dicom_code

        mri_code = self.dicom_modality_code(mri_node)
        mri_tagged = modality_of_dicom_code(mri_code)
        if mri_tagged:
            return f"The MRI '{mri_node.GetName()}' is a {mri_tagged.label} series (DICOM Modality {mri_code}); select an MR series as the MRI."
        label = modality.label
        other_code = self.dicom_modality_code(other_node)
        if other_code == MRI_DICOM_CODE:
            return f"The {label} '{other_node.GetName()}' is an MR series (DICOM Modality MR); select a CT, SPECT or PET volume to fuse with the MRI."
        other_tagged = modality_of_dicom_code(other_code)
        if other_tagged and other_tagged != modality:
            tagged_label = other_tagged.label
            return f"'{other_node.GetName()}' is a {tagged_label} series (DICOM Modality {other_code}), not {label}; choose {tagged_label} as its modality."
        return None

    @staticmethod
    def _overlap(mri_node, other_node) -> bool:
        mri_bounds = volumes.world_bounds(mri_node)
        other_bounds = volumes.world_bounds(other_node)
        lower = np.maximum(mri_bounds[0::2], other_bounds[0::2])
        upper = np.minimum(mri_bounds[1::2], other_bounds[1::2])
        return bool(np.all(lower < upper))

    @staticmethod
    def _output_problem(output_node, input_nodes, modality: Modality) -> str | None:
        if any(output_node.GetID() == node.GetID() for node in input_nodes):
            return "The output volume must not be one of the inputs; choose 'Create new volume'."
        if modality.shown_in_colour and not output_node.IsA("vtkMRMLVectorVolumeNode"):
            return f"{modality.label} fusion gives an RGB volume; choose 'Create new volume' or an existing RGB (vector) volume as output."
        if not modality.shown_in_colour and (not output_node.IsA("vtkMRMLScalarVolumeNode") or output_node.IsA("vtkMRMLVectorVolumeNode") or output_node.IsA("vtkMRMLLabelMapVolumeNode")):
            return f"{modality.label} fusion gives a greyscale volume; choose 'Create new volume' or an existing scalar volume as output."
        return None

    def dicom_modality_code(self, node) -> str:
        """The DICOM Modality of the node's series ('MR', 'CT', 'NM', 'PT', ...); '' when it has none."""
        import slicer

        # Read-only: use the subject hierarchy only if the scene already has one.
        hierarchy = self.scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
        item = hierarchy.GetItemByDataNode(node) if hierarchy is not None else 0
        if not item:
            return ""
        code = hierarchy.GetItemAttribute(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName())
        return (code or "").strip().upper()

    def guess_modality(self, node):
        """What the DICOM Modality of the node's series, else its name, says about its modality.

        Returns an ``EdgeFusionLib.modality.ModalityGuess`` (the same rule as the command line:
        a name that points to two modalities gives no guess); its ``reason`` tells the user why.
        """
        from EdgeFusionLib.modality import guess_modality

        return guess_modality(self.dicom_modality_code(node), node.GetName() or "")

    def frame_of_reference_uid(self, node) -> str:
        """The DICOM FrameOfReferenceUID of the node's series; '' when it was not loaded from DICOM.

        Read from Slicer's DICOM database (the desktop application's), through the instance UIDs
        that the DICOM importer records on the node.
        """
        import slicer

        instance_uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
        database = getattr(slicer, "dicomDatabase", None)
        if not instance_uids or database is None:
            return ""
        file_name = database.fileForInstance(instance_uids[0])
        return (database.fileValue(file_name, "0020,0052") or "").strip() if file_name else ""

    def registration_choice(self, mri_node, other_node, requested: str = "auto") -> tuple[str, str]:
        """('none' | 'rigid' | 'affine', why) for aligning ``other_node`` to ``mri_node`` (no voxel is read).

        The command line's rule (``EdgeFusionLib.registration.decide_registration``): 'auto' aligns
        rigidly unless both series share a DICOM frame of reference or a volume is a single slice.
        Raises ``InputError`` for a choice that cannot run (e.g. rigid for a single slice).
        """
        from EdgeFusionLib.registration import decide_registration

        flat = next((f"volume '{node.GetName()}'" for node in (mri_node, other_node)
                     if node.GetImageData() is not None and min(node.GetImageData().GetDimensions()) == 1), None)
        return decide_registration(requested, flat=flat, mri_frame=self.frame_of_reference_uid(mri_node),
                                   other_frame=self.frame_of_reference_uid(other_node))

    @staticmethod
    def axis_for_plane(mri_node, plane: str | None) -> int | None:
        """Numpy axis of the MRI's voxel array whose slices lie in ``plane`` ('axial', 'coronal', 'sagittal').

        None or 'auto' gives None, which lets EdgeFusionLib pick the acquisition plane.
        """
        if plane is None or plane == "auto":
            return None
        normal = PLANE_NORMAL_RAS_AXIS[plane]
        directions = np.abs(volumes.ijk_to_ras(mri_node)[:3, :3])
        # Column c is the RAS direction of voxel index i, j or k; the slices along the index
        # whose direction is closest to the plane's normal lie in the plane.
        ijk_index = int(np.argmax(directions[normal, :]))
        return 2 - ijk_index  # numpy arrays are indexed [k, j, i]

    @staticmethod
    def plane_of_axis(mri_node, axis: int) -> str:
        """Inverse of :meth:`axis_for_plane`: the anatomical plane closest to the slices along ``axis``."""
        direction = np.abs(volumes.ijk_to_ras(mri_node)[:3, 2 - axis])
        normal = int(np.argmax(direction))
        return {value: key for key, value in PLANE_NORMAL_RAS_AXIS.items()}[normal]

    @staticmethod
    def display_colour_node(volume_node):
        """The colour node the slice viewers currently use for the volume, or None."""
        display_node = volume_node.GetDisplayNode() if volume_node is not None else None
        return display_node.GetColorNode() if display_node is not None else None

    def fusion_colour_node(self, volume_node):
        """The colour table a greyscale SPECT/PET is fused through when none is chosen.

        The one the slice viewers show it with, so that the fusion keeps the colours the user
        sees; but a volume shown in grey gets ``DEFAULT_COLOUR_TABLE_NAME``: fused through Grey,
        the result would carry no colour at all. The panel and scripts both use this rule.
        """
        shown = self.display_colour_node(volume_node)
        if shown is not None and shown.GetName() != GREY_COLOUR_TABLE_NAME:
            return shown
        return self.scene.GetFirstNodeByName(DEFAULT_COLOUR_TABLE_NAME)

    # ---------------------------------------------------------------- running

    def prepare(
        self,
        mri_node,
        other_node,
        modality: str,
        *,
        method: str | None = None,
        axis: int | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        colour_node=None,
        output_node=None,
        registration: str = "none",
    ) -> FusionJob:
        """Check the inputs and copy what the fusion needs out of the scene.

        ``colour_node`` (SPECT/PET given as a scalar volume) is the colour table the
        volume is mapped through before fusion; None uses the one the slice viewers
        show it with. The mapping is stretched over the volume's display window.
        ``registration``: 'auto', 'none', 'rigid' or 'affine' (see :meth:`registration_choice`);
        the job carries the resolved choice.
        Raises ``EdgeFusionLib.errors.InputError`` with a one-line message.
        """
        from EdgeFusionLib.errors import InputError
        from EdgeFusionLib.fusion.options import FusionOptions
        from EdgeFusionLib.io.images import check_image

        problem = self.validate_inputs(mri_node, other_node, modality, output_node)
        if problem:
            raise InputError(problem)
        other_modality = modality_entry(modality)

        colour_table = colour_range = colour_name = None
        if other_modality.shown_in_colour and volumes.number_of_components(other_node) == 1:
            colour_node = colour_node or self.fusion_colour_node(other_node)
            if colour_node is None:
                raise InputError(f"Select a colour table for the {other_modality.label} volume '{other_node.GetName()}'.")
            colour_table = volumes.colour_table(colour_node)
            colour_range = volumes.display_window(other_node)
            colour_name = colour_node.GetName()
            if not colour_range[1] > colour_range[0]:
                raise InputError(f"The {other_modality.label} volume '{other_node.GetName()}' has a single intensity; there is nothing to show in colour.")
        try:
            registration, registration_reason = self.registration_choice(mri_node, other_node, registration)
            options = FusionOptions(method=method, axis=axis, device=device, batch_size=batch_size,
                                    colour_table=colour_table, colour_range=colour_range, registration=registration)
            options.check(other_modality.name)
        except InputError as error:
            raise InputError(as_sentence(str(error))) from None

        mri_image = volumes.sitk_image_from_volume(mri_node)
        other_image = volumes.sitk_image_in_frame_of(other_node, mri_node)
        # Voxel values (NaN, constant) are checked here, not in validate_inputs (which reads no voxel),
        # so that the message names the node and comes before a worker is started.
        for image, role in ((mri_image, f"MRI '{mri_node.GetName()}'"), (other_image, f"{other_modality.label} '{other_node.GetName()}'")):
            try:
                check_image(image, role)
            except InputError as error:
                raise InputError(as_sentence(str(error))) from None

        return FusionJob(
            mri_node_id=mri_node.GetID(),
            other_node_id=other_node.GetID(),
            output_node_id=output_node.GetID() if output_node is not None else None,
            output_name=f"{mri_node.GetName()} + {other_node.GetName()} fused",
            modality=other_modality.name,
            mri_image=mri_image,
            other_image=other_image,
            options=options,
            colour_name=colour_name,
            registration_reason=registration_reason,
        )

    @staticmethod
    def run(job: FusionJob, progress: ProgressCallback | None = None, cancel: CancelCallback | None = None,
            model=None) -> FusionResult:
        """Align (when the job says so) and fuse the job's images in this process.

        ``model`` overrides the bundled weights (tests use a small untrained network).
        Raises ``EdgeFusionLib.errors.FusionCancelled`` when ``cancel()`` returns True, and
        ``InputError`` for a registration that failed (nothing is changed either way).
        """
        from EdgeFusionLib.fusion.pipeline import fuse_images

        aligned = []
        image = fuse_images(job.mri_image, job.other_image, job.modality, **job.options.arguments(), model=model,
                            progress=progress, cancel=cancel, registered=aligned.append)
        registration = aligned[0] if aligned else None
        if registration is None:
            return FusionResult(image)
        return FusionResult(image, registration.transform, registration.summary())

    def finish(self, job: FusionJob, result: FusionResult, details: dict[str, str] | None = None):
        """Write the fused image into the output volume node (created and added to the scene here).

        The node gets the MRI's geometry and parent transform, and joins the MRI's study
        in the subject hierarchy. ``details`` (e.g. device, time) are stored as node
        attributes next to the method and inputs. After an alignment, a linear transform node
        (the registration) is added under the MRI's parent transform, with a copy of the other
        volume under it (:meth:`_add_aligned_copy`). If anything fails, the nodes created here are
        removed again and an existing output node is put back as it was.
        """
        import SimpleITK as sitk
        import vtk

        import slicer
        from EdgeFusionLib.errors import InputError

        scene = self.scene
        fused_image = result.image
        mri_node = scene.GetNodeByID(job.mri_node_id)
        if mri_node is None:
            raise InputError("The MRI volume was removed from the scene during the fusion; nothing was created.")
        is_rgb = fused_image.GetNumberOfComponentsPerPixel() == 3
        fused = sitk.GetArrayFromImage(fused_image)
        # [k, j, i] like the MRI.
        expected_shape = tuple(reversed(mri_node.GetImageData().GetDimensions())) + ((3,) if is_rgb else ())
        if fused.shape != expected_shape:
            raise RuntimeError(f"the fused image has shape {fused.shape}, the MRI {expected_shape}: the MRI changed during the fusion")

        if job.output_node_id is not None:
            output_node = scene.GetNodeByID(job.output_node_id)
            if output_node is None:
                raise InputError("The output volume was removed from the scene during the fusion; nothing was written.")
            restore_output = self._restorer(output_node)
        else:
            output_node = slicer.vtkMRMLVectorVolumeNode() if is_rgb else slicer.vtkMRMLScalarVolumeNode()
            restore_output = None

        added_nodes = []
        try:
            if result.transform is not None:
                added_nodes = self._add_aligned_copy(job, result, mri_node)
                details = {"Registration": result.registration_summary, "RegistrationTransform": added_nodes[0].GetName(),
                           **(details or {})}
            output_node.SetIJKToRASMatrix(volumes.array_to_matrix(volumes.ijk_to_ras(mri_node)))
            # A new image object: an existing output's old one stays untouched, for restore_output.
            output_node.SetAndObserveImageData(vtk.vtkImageData())
            slicer.util.updateVolumeFromArray(output_node, fused)
            self._record_provenance(output_node, job, mri_node, details or {})
            if restore_output is None:
                output_node.SetName(scene.GenerateUniqueName(job.output_name))
                scene.AddNode(output_node)
            output_node.SetAndObserveTransformNodeID(mri_node.GetTransformNodeID())
            output_node.CreateDefaultDisplayNodes()
            # Shown as delivered, not through an automatic window: fused scalars over [0, 1], RGB over
            # 0-255 (an automatic window would stretch an RGB fusion whose brightest pixel is below 255).
            display_node = output_node.GetDisplayNode()
            display_node.AutoWindowLevelOff()
            display_node.SetWindowLevelMinMax(0.0, 255.0 if is_rgb else 1.0)
            self._place_beside(output_node, mri_node)
        except BaseException:
            if restore_output is not None:
                restore_output()
            elif output_node.GetScene() is not None:
                self._remove_with_display_nodes(output_node)
            for node in reversed(added_nodes):
                self._remove_with_display_nodes(node)
            raise
        return output_node

    def _add_aligned_copy(self, job: FusionJob, result: FusionResult, mri_node) -> list:
        """Add the registration's transform node and, under it, a copy of the other volume; returns both.

        The transform node sits under the MRI's parent transform; the copy holds the other volume as
        it was fused (its own parent transforms hardened) and is moved onto the MRI by the transform,
        so editing the transform in the Transforms module moves it, and fusing the copy with
        'Align to the MRI first' off fuses it as adjusted. The input nodes are not touched.
        """
        import SimpleITK as sitk

        import slicer

        scene = self.scene
        other_node = scene.GetNodeByID(job.other_node_id)
        other_name = other_node.GetName() if other_node is not None else "other volume"
        added = []
        transform_node = slicer.vtkMRMLLinearTransformNode()
        transform_node.SetName(scene.GenerateUniqueName(f"{other_name} to {mri_node.GetName()} (registration)"))
        # ITK's transform maps MRI points to the other's points: Slicer's "from parent" direction.
        transform_node.SetMatrixTransformFromParent(volumes.array_to_matrix(volumes.ras_matrix_of_sitk_transform(result.transform)))
        scene.AddNode(transform_node)
        added.append(transform_node)
        transform_node.SetAndObserveTransformNodeID(mri_node.GetTransformNodeID())

        other_image = job.other_image
        is_rgb = other_image.GetNumberOfComponentsPerPixel() > 1
        copy_node = slicer.vtkMRMLVectorVolumeNode() if is_rgb else slicer.vtkMRMLScalarVolumeNode()
        copy_node.SetName(scene.GenerateUniqueName(f"{other_name} (aligned)"))
        copy_node.SetIJKToRASMatrix(volumes.array_to_matrix(volumes.ijk_to_ras_from_sitk(other_image)))
        scene.AddNode(copy_node)
        added.append(copy_node)
        slicer.util.updateVolumeFromArray(copy_node, sitk.GetArrayFromImage(other_image))
        copy_node.SetAndObserveTransformNodeID(transform_node.GetID())
        copy_node.CreateDefaultDisplayNodes()
        source_display = other_node.GetDisplayNode() if other_node is not None else None
        if source_display is not None and not is_rgb:
            # Shown like the original (colour table, window), so the two can be compared.
            copy_node.GetDisplayNode().CopyContent(source_display)
        self._place_beside(copy_node, mri_node)
        return added

    def _restorer(self, output_node) -> Callable[[], None]:
        """A function that undoes what :meth:`finish` changes on an existing output node (keep the two in step)."""
        image = output_node.GetImageData()
        ijk_to_ras = volumes.array_to_matrix(volumes.ijk_to_ras(output_node))
        attributes = {name: output_node.GetAttribute(name) for name in output_node.GetAttributeNames()}
        transform_id = output_node.GetTransformNodeID()
        display_ids = {output_node.GetNthDisplayNodeID(index) for index in range(output_node.GetNumberOfDisplayNodes())}
        display_node = output_node.GetDisplayNode()
        window_level = None
        if display_node is not None and display_node.IsA("vtkMRMLScalarVolumeDisplayNode"):
            window_level = (display_node.GetWindow(), display_node.GetLevel(), display_node.GetAutoWindowLevel())
        hierarchy = self.scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
        item = hierarchy.GetItemByDataNode(output_node) if hierarchy is not None else 0
        parent_item = hierarchy.GetItemParent(item) if item else 0

        def restore() -> None:
            output_node.SetAndObserveImageData(image)
            output_node.SetIJKToRASMatrix(ijk_to_ras)
            for name in output_node.GetAttributeNames():
                if name not in attributes:
                    output_node.RemoveAttribute(name)
            for name, value in attributes.items():
                output_node.SetAttribute(name, value)
            output_node.SetAndObserveTransformNodeID(transform_id)
            for index in reversed(range(output_node.GetNumberOfDisplayNodes())):
                if output_node.GetNthDisplayNodeID(index) not in display_ids:
                    self.scene.RemoveNode(output_node.GetNthDisplayNode(index))
            if window_level is not None:
                display_node.SetWindowLevel(*window_level[:2])
                display_node.SetAutoWindowLevel(window_level[2])
            if item:
                hierarchy.SetItemParent(item, parent_item)

        return restore

    def fuse(self, mri_node, other_node, modality: str, *, progress: ProgressCallback | None = None,
             cancel: CancelCallback | None = None, model=None, **options):
        """Fuse two volume nodes in this process and return the new (or given) output volume node.

        A vtkMRMLScalarVolumeNode (values in [0, 1]) for CT, a vtkMRMLVectorVolumeNode
        (RGB, uint8) for SPECT/PET. ``options`` are those of :meth:`prepare` (method, axis,
        device, batch_size, colour_node, output_node, registration); ``progress``, ``cancel`` and
        ``model`` those of :meth:`run`.
        """
        job = self.prepare(mri_node, other_node, modality, **options)
        return self.finish(job, self.run(job, progress=progress, cancel=cancel, model=model))

    # ---------------------------------------------------------------- scene helpers

    @staticmethod
    def _record_provenance(output_node, job: FusionJob, mri_node, details: dict[str, str]) -> None:
        other_node = mri_node.GetScene().GetNodeByID(job.other_node_id)
        attributes = {
            "MRI": mri_node.GetName(),
            "Other": other_node.GetName() if other_node is not None else job.other_node_id,
            "Modality": MODALITIES[job.modality].label,
            "Method": job.options.method or "default",
            "ColourTable": job.colour_name or "",
            **details,
        }
        for name, value in attributes.items():
            output_node.SetAttribute(ATTRIBUTE_PREFIX + name, str(value))

    def _place_beside(self, output_node, mri_node) -> None:
        """Put the output under the MRI's parent item (its study) in the subject hierarchy."""
        hierarchy = self.scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
        if hierarchy is None:  # bare scene (not the Slicer application): no hierarchy to place it in
            return
        mri_item = hierarchy.GetItemByDataNode(mri_node)
        parent_item = hierarchy.GetItemParent(mri_item) if mri_item else hierarchy.GetSceneItemID()
        output_item = hierarchy.GetItemByDataNode(output_node)
        if output_item:
            hierarchy.SetItemParent(output_item, parent_item)
        else:
            hierarchy.CreateItem(parent_item, output_node)

    def _remove_with_display_nodes(self, node) -> None:
        for index in reversed(range(node.GetNumberOfDisplayNodes())):
            display_node = node.GetNthDisplayNode(index)
            if display_node is not None:
                self.scene.RemoveNode(display_node)
        self.scene.RemoveNode(node)

    def slice_composite_nodes(self) -> list:
        """The scene's slice composite nodes (one per slice view: which volumes it shows, blended how)."""
        collection = self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        return [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]

    def show_result(self, mri_node, fused_node, fused_on_top: bool = True, opacity: float = 0.5, fit_views: bool = True) -> None:
        """Show the MRI and the fused volume in every slice view, blended with ``opacity``.

        ``fused_on_top``: the fused volume is the foreground layer (MRI below it);
        otherwise the MRI is drawn over the fused volume.
        """
        background, foreground = (mri_node, fused_node) if fused_on_top else (fused_node, mri_node)
        for composite_node in self.slice_composite_nodes():
            composite_node.SetBackgroundVolumeID(background.GetID())
            composite_node.SetForegroundVolumeID(foreground.GetID())
            composite_node.SetForegroundOpacity(float(opacity))
        if fit_views:
            self.fit_slice_views()

    def set_foreground_opacity(self, opacity: float) -> None:
        """Blend of the foreground layer in every slice view (0: background only, 1: foreground only)."""
        for composite_node in self.slice_composite_nodes():
            composite_node.SetForegroundOpacity(float(opacity))

    def fit_slice_views(self) -> None:
        """Fit every slice view's field of view to its background volume."""
        slice_logics = self.application_logic.GetSliceLogics() if self.application_logic is not None else None
        if slice_logics is None:
            return
        for index in range(slice_logics.GetNumberOfItems()):
            slice_logics.GetItemAsObject(index).FitSliceToBackground()
