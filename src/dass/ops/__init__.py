"""Selective-scan operators: a float64 reference and the fast CPU/GPU path."""

from dass.ops.selective_scan import selective_scan
from dass.ops.selective_scan_ref import selective_scan_ref

__all__ = ["selective_scan", "selective_scan_ref"]
