"""Hydra configs of the extension (found by ``spktrain`` through ``hydra_plugins``)."""
