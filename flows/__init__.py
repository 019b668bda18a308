"""Prefect flows: composition of tasks only (no arithmetic, no file handling)."""
