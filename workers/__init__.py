"""Layer 2 of the pack: Celery workers that run actions as steps of workflows, and the CLI."""
