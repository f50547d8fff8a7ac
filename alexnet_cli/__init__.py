"""The `alexnet` command. Each subcommand lives in its own module and imports frameworks only when run."""
