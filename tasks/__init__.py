"""Prefect tasks: each a thin call of one ferflow stage, plus retries, caching and artifacts."""
