"""One module per `mcc` subcommand."""
