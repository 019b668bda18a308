# A Prefect worker that runs the retraining flow on CPU.
# Build from the repository root: docker build -f infra/docker/worker-cpu.Dockerfile -t ferflow-worker-cpu .
FROM python:3.11-slim
ENV UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir "uv>=0.5"
WORKDIR /app
# Dependencies first, so code changes do not reinstall TensorFlow.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --extra cpu --no-install-project --no-dev
COPY . .
RUN uv sync --frozen --extra cpu --no-dev
CMD ["prefect", "worker", "start", "--pool", "ferflow-cpu", "--type", "process"]
