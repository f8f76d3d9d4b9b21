"""The distributed mode on Celery + Redis: config, app, thin task wrappers, guard, job store,
client, beat and inbox. The top room of service/: nothing else in service/ imports it.
(Empty on purpose: import the modules themselves.)"""
