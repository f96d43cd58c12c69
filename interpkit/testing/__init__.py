"""Tools for testing explainers: model fingerprints (and, growing, a conformance suite)."""

from .fingerprint import ModelFingerprint, assert_model_unchanged

__all__ = ["ModelFingerprint", "assert_model_unchanged"]
