"""The product rules as pure functions: plain values in, a decision or a domain
error out.  Nothing in this package opens a socket, a session or a file, so
every rule is tested without a server (tests/test_policies_*.py)."""
