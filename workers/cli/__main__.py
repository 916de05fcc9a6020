"""``python -m workers.cli``: the same command as ``openai-pack``."""

from workers.cli.main import main

main()
