"""Hydra search-path plugin that makes the ``schnet_transfer`` configs visible to ``spktrain``."""
