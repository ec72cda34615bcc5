"""Where the layers' Jinja2 templates live and how they are rendered (one place for all layers)."""

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
"""The repository's templates/ folder."""

JINJA = {"trim_blocks": True, "lstrip_blocks": True}
"""jinja_env_kwargs for files.template: block tags leave no blank lines in config files."""
