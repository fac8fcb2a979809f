"""One module per ``obmd`` subcommand, each exposing ``register(subparsers)``."""
