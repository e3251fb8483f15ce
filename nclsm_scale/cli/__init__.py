"""Command line interface: ``nclsm-scale COMMAND``; one module per command."""
