"""One hospital site: Flower ClientApp glue around local DP-SGD training of LoRA adapters."""
