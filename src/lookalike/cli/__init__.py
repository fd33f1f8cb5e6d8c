"""The `lookalike` command line. The command modules define their commands; this package
registers them on :func:`main` (they never import it back), and nothing in the library imports
the CLI."""

from __future__ import annotations

import click

from . import learn, learning, lifecycle, quality, query, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lookalike")
def main() -> None:
    """lookalike: a streaming visual-search indexer.

    Upload events flow from Kafka through Faust agents that embed each image and upsert it into
    Qdrant; an HTTP API answers "what looks like this?". Settings come from LOOKALIKE_*
    environment variables; flags override them.
    """


for _module in (serve, query, quality, learning, learn, lifecycle):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
