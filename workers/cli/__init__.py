"""The ``openai-pack`` command line: actions, integrations, workflows, runs, triggers and workers."""


def main() -> None:
    """Console-script entry point (imported lazily so ``python -m workers.cli.serve`` loads no more)."""
    from workers.cli.main import main as run_cli

    run_cli()


__all__ = ["main"]
