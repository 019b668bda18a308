"""Prefect tasks: each a thin call of one stage of `ferflow.stages`, plus retries, caching and artifacts."""
