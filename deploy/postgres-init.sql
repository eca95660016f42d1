-- The MLflow backend store beside the contact store (database "revival", made by the image).
CREATE DATABASE mlflow OWNER revival;
