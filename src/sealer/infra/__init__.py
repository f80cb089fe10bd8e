"""Reaching hosts: SSH connector, command runner, sudo, bastion, file transfer, fan-out."""
