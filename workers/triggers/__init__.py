"""What starts runs besides the CLI: webhooks (HTTP) and schedules (Celery beat)."""
