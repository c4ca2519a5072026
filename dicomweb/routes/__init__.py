"""DICOMweb route modules; each exposes `router`, included under every service root."""
