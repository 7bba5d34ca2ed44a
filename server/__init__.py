"""The coordinator: Flower ServerApp glue, the federated round loop and the run directory."""
