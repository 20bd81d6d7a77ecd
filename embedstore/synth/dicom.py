"""DICOM copies of phantom images for the DICOM reading path (pydicom imported only here)."""

from __future__ import annotations

import numpy as np

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def write_dicom(path: str, img: np.ndarray, image_id: str, study_id: str, view: str, projection: str,
                bits: int, monochrome1: bool, seed: int) -> None:
    """Write `img` (float in [0, 1], white = dense) as a CR image with `bits` stored bits.

    MONOCHROME1 stores inverted values (white = low), as many CR plates do; rescale and a VOI
    window are set so that readers going through the modality and VOI LUTs get the picture back.
    UIDs derive from the seed and the image id, and no dates from the clock: same seed, same bytes.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    top = (1 << bits) - 1
    stored = np.round(img * top).astype(np.uint16)
    if monochrome1:
        stored = (top - stored).astype(np.uint16)
    uid = lambda *parts: generate_uid(entropy_srcs=[str(seed), *parts])  # noqa: E731
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uid(image_id, "sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["embedstore synth"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(study_id, "study")
    ds.SeriesInstanceUID = uid(image_id, "series")
    ds.Modality = "CR"
    ds.StudyDate = "20130801"
    ds.PatientID = study_id
    ds.PatientName = "Phantom^" + study_id
    ds.StudyID = study_id
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = projection
    ds.SeriesDescription = view
    ds.ImageComments = image_id
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = str((top + 1) // 2)
    ds.WindowWidth = str(top + 1)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
