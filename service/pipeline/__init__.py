"""What a job works on (inputs: upstream set, tasks, NLL cache) and the heavy halves of the jobs
(compute, line, stats, shards, completion, predict, analysis). Imports tracking/, never
release/ or dist/. (Empty on purpose: import the modules themselves.)"""
