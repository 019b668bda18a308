# The MLflow tracking server: PostgreSQL backend (psycopg2), S3 artifacts (boto3), basic auth.
FROM python:3.11-slim
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" "psycopg2-binary>=2.9,<3" "boto3>=1.34" "flask-wtf>=1.2"
COPY infra/mlflow/basic_auth.ini /etc/mlflow/basic_auth.ini
ENV MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini
EXPOSE 5000
