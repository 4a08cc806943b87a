"""The `mark` command: composes each package's sub-commands. The only module that knows all three."""
