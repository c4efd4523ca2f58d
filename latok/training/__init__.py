"""Training the Latent Inpainting Transformer: latent shards (``data``), the LightningModule
(``module``) and the LightningCLI entry point (``train``).  Lightning is imported only here and
in :mod:`latok.evaluation`."""
