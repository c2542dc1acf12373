"""Exporters: each translates runtel records into one backend (``runtel.exporters.<name>``)."""
