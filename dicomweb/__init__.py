"""DICOMweb service (QIDO-RS, WADO-RS, STOW-RS, rendered, viewer) on FastAPI."""
