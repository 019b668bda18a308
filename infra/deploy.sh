#!/usr/bin/env bash
# Create (or update) the work pools and register the deployments of prefect.yaml.
# Run from the repository root against the server in PREFECT_API_URL:
#   PREFECT_API_URL=http://127.0.0.1:4200/api infra/deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT="${PREFECT:-prefect}"
CPU_POOL="${FERFLOW_CPU_POOL:-ferflow-cpu}"
GPU_POOL="${FERFLOW_GPU_POOL:-ferflow-gpu}"

"$PREFECT" work-pool create "$CPU_POOL" --type process \
    --base-job-template infra/prefect/cpu-pool-job-template.json --overwrite
# The GPU pool is a process pool too: each GPU worker (compose service or k8s pod) runs
# flow runs on its own GPU. With prefect-kubernetes installed, a kubernetes pool instead:
#   prefect work-pool create ferflow-gpu --type kubernetes \
#       --base-job-template infra/prefect/gpu-kubernetes-job-template.json --overwrite
"$PREFECT" work-pool create "$GPU_POOL" --type process \
    --base-job-template infra/prefect/cpu-pool-job-template.json --overwrite
"$PREFECT" --no-prompt deploy --all
