"""The bundled sample datasets, shipped in the wheel as ``tunewiz.sample_data`` (read through
importlib.resources: :func:`tunewiz.core.samples.path`)."""
