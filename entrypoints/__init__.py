"""The top layer: the `llmrec` command line (one module per concern: argument parsing, commands, rendering).

Settings are read here and nowhere below; every command reaches recommendations through `llmrec.pipeline`.
"""
