"""One module per ``posemu`` subcommand; each exposes ``command``."""
