"""Reporting: reads manifests and run directories and renders tables, figures and the report.

It only reads and renders; every number it shows was written by a run or a producer rule.
"""
