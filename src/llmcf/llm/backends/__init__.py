"""Generation backends: the registry (base.py), ``make_backend`` (factory.py) and one file per backend."""
