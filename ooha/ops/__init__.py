"""Generic operations in pyinfra's own style: arguments in, never host.data."""
