"""``python -m classifier`` runs the command-line tool."""

from .cli import main

main()
