"""Training: the options (config), batches from an encoded cache, and the flow-matching loop (single process, DDP,
FSDP, exact resume)."""
