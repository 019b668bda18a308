"""The data contract's parts: checks, tables, expectations, GX runner, report.

The entry points are in `ferflow.validation` (`validate_dataset`, `training_mask`).
"""
