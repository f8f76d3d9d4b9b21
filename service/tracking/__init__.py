"""The MLflow edge: runs (store), per-example rows, the registry, matrix assembly, job records
and lineage keys. The only room of service/ that imports mlflow; it imports nothing else of
service/ but settings and errors. (Empty on purpose: import the modules themselves.)"""
