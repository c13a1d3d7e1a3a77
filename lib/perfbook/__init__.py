"""perfbook: the Performance Degradation Runbook as executable notebooks and incident reports."""
__version__ = "0.1.0"
