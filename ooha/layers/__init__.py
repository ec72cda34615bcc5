"""One module per layer: commented defaults, input rules, the @deploy, the report check."""
