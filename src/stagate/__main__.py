"""`python -m stagate` = the `stagate` command."""

from .cli import cli

if __name__ == "__main__":
    cli()
