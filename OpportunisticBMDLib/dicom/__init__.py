"""DICOM outputs and PACS exchange (issue 16): a Segmentation of the ROIs and labels, a TID 1500 Measurement
Report of the numbers in results.json, the PDF report as Encapsulated PDF, all in the source CT's study, and
a DICOMweb client to fetch a study's CT series and store the results back. Qt-, VTK- and Slicer-free.

One module per job: ``sources`` (the source series' headers, UIDs completed when an export blanked them),
``ct_series`` (a CT series written from a NIfTI/NRRD volume when there is no DICOM source), ``seg``, ``sr``,
``pdf``, ``writer`` (OUT/dicom/), ``dicomweb`` (QIDO/WADO/STOW), ``cli`` (the analyze flags).
"""
