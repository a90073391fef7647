"""What the routes do, without HTTP: jobs, keys, queueing and the engine's hooks."""
