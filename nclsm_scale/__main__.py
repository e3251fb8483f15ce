"""``python -m nclsm_scale`` runs the command line."""

from nclsm_scale.cli.app import entry

entry()
