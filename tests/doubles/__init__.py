"""Contract-faithful stand-ins for k3s and the Kubernetes API server, used by the tests.

Test infrastructure only: nothing in src/ may import this package (import-linter enforces it).
See tests/doubles/README.md for what each stand-in mirrors and what it leaves out.
"""
