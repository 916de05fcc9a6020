"""The ``openai-pack`` command line: actions, integrations, workflows, runs, triggers and workers.

Modules, imports pointing one way (checked by ``tests/test_layers.py``):

- ``main``: the root app and ``main()``, the console-script entry point; commands over actions,
  ``run``, integrations, ``simulate`` and ``docs``; registers the two below.
- ``workflows``: ``worker``, ``workflow validate|run``, ``runs``.
- ``serve``: ``serve`` and ``beat`` (also runnable alone: ``python -m workers.cli.serve``).
- ``boundary``: the one error boundary both entry points run through.
- ``inputs``: options that carry values (``--input``), read strictly.
- ``output``: the leaf: JSON results, tables, JSON errors and their exit codes.
"""

from typing import NoReturn


def main() -> NoReturn:
    """Console-script entry point (imported lazily so ``python -m workers.cli.serve`` loads no more)."""
    from workers.cli.main import main as run_cli

    run_cli()


__all__ = ["main"]
