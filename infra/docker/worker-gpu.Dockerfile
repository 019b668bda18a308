# A Prefect worker that runs the retraining flow on NVIDIA GPUs with Keras on JAX: JAX's CUDA
# wheels (the `jax-gpu` extra), XLA, the persistent compilation cache and data-parallel
# training over the worker's GPUs. The GPU settings (batch, bf16, XLA flags, time budget)
# are profiles/gpu.yaml, which the GPU deployment runs (prefect.yaml).
# Build from the repository root: docker build -f infra/docker/worker-gpu.Dockerfile -t ferflow-worker-gpu .
FROM nvidia/cuda:12.5.1-cudnn-runtime-ubuntu22.04
ENV UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    DEBIAN_FRONTEND=noninteractive UV_PYTHON=3.11 \
    KERAS_BACKEND=jax FERFLOW_COMPILATION_CACHE=/var/cache/ferflow/xla
RUN apt-get update && apt-get install -y --no-install-recommends git python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/* && pip3 install --no-cache-dir "uv>=0.5"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv python install 3.11 && uv sync --frozen --extra jax-gpu --no-install-project --no-dev
COPY . .
RUN uv sync --frozen --extra jax-gpu --no-dev
VOLUME /var/cache/ferflow
CMD ["prefect", "worker", "start", "--pool", "ferflow-gpu", "--type", "process"]
