"""Helpers shared by the test directories (not tests themselves): clusterkit (a local store and
the controller's loop), statuskit/statuspage/statusserver (the status model and page), templatekit
(the ignition-templates render helpers), fakenodeapi, poolyaml, procs, slowclient, and leaks (the
check tests/conftest.py runs after every test)."""
