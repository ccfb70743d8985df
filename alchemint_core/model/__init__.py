"""The model: Wan's diffusion transformer with AlcheMinT's adapter (configs, layers, RoPE and WeRoPE, references,
dense captions, Wan 2.2 experts), its files (loading, initialisation) and running it on other hosts and devices
(hosted forward, block offload, memory)."""
