"""The HTTP edge on FastAPI: DICOMweb (QIDO-RS, WADO-RS, STOW-RS, rendered, capabilities) under every service
root, the archive's own REST resources (consent, audit, health), the features' routers from the composition
root, and the built-in OHIF viewer. `app.create_app` wires them and turns domain errors into HTTP answers in
one handler; `deps` gives DICOMweb routes their Context (caller, partition, service root)."""
