-- One PostgreSQL server for both backends: MLflow's tracking store and Prefect's database.
-- Runs once, when the data volume is empty (docker-entrypoint-initdb.d).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
