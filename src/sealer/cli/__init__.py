"""Command line: parse arguments, call the layers below, render results. No logic here."""
