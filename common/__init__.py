"""fedcare's framework-free core: never imports flwr, hydra, client or server."""
