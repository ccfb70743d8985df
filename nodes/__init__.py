"""ComfyUI nodes (classic API). Thin: parse inputs, call alchemint_core, format outputs."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
