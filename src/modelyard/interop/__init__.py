"""Moving what another registry holds into modelyard: MLflow's experiments, runs, registered
models and versions (:func:`~modelyard.interop.mlflow_import.import_mlflow`)."""
