"""Prefect flows: only composition of the tasks in `tasks/`."""
