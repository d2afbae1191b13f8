"""mcc, the machine-config controller: render pools, generate configs, roll them out."""
