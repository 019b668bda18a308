"""The data contract's parts: checks, tables, expectations, GX runner, report.

The entry points are in `ferflow.contract.validation` (`validate_dataset`, `training_mask`).
"""
