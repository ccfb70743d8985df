"""The embedded demo: a tiny AlcheMinT model with its own VAE and text encoder, trained by this project on its
own synthetic videos, so the method runs on any CPU in seconds."""
