"""ferflow: the core library of the facial emotion recognition workflow.

It knows nothing about Prefect or DVC: `flows/`, `tasks/` and `dvc.yaml` call it.
"""

__version__ = "0.1.0"
