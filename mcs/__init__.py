"""mcs, the machine-config server: serves Ignition to joining machines."""
