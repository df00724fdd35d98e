"""Loss-Landscape Lab: shared helpers behind the workbook's chapters."""

__version__ = "0.1.0"
