"""Route modules, one resource each; each exposes `router`. The DICOMweb ones (qido, wado, rendered, stow,
capabilities) are included under every service root; consent, audit and health once."""
