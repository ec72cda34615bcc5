"""deploys package."""
