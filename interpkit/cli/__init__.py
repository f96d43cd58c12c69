"""The command line: argument parsing (``main``), and what each command does over files
(``commands``, ``explain_files``, ``evaluation``). Library modules never import from here."""

from .main import main

__all__ = ["main"]
