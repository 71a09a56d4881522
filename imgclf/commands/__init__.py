"""The `imgclf` subcommands, one module per group; `imgclf.cli` builds the parser and dispatches."""
