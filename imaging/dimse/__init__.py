"""DICOM gateway over DIMSE (pynetdicom): C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET."""
