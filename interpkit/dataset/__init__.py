"""Whole datasets explained at scale: ``explain_dataset`` writes an index-keyed store of
per-shard arrays (``store``), ``read_store`` reads it back."""

from .run import explain_dataset, image_folder_dataset
from .store import MapStore, read_store

__all__ = ["MapStore", "explain_dataset", "image_folder_dataset", "read_store"]
