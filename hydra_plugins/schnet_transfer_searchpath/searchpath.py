"""Append ``pkg://schnet_transfer.configs`` to every Hydra config search path.

Hydra imports every module below the ``hydra_plugins`` namespace package and
registers the :class:`~hydra.plugins.search_path_plugin.SearchPathPlugin`
subclasses it finds.  With this plugin installed, ``spktrain
experiment=finetune_hopv`` resolves the extension's experiment, data and task
configs from any working directory, without ``--config-dir``.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

CONFIG_PACKAGE = "pkg://schnet_transfer.configs"


class SchnetTransferSearchPathPlugin(SearchPathPlugin):
    """Register the configs shipped in :mod:`schnet_transfer.configs`."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Append the extension's config package (schnetpack's own stays first)."""
        search_path.append(provider="schnet-transfer", path=CONFIG_PACKAGE)
