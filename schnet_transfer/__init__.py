"""Cheap-QC transfer learning for SchNetPack."""
