"""mcd, the machine-config daemon: applies rendered configs on a node."""
