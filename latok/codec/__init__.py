"""The codec: what turns a latent into adaptive tokens and back.

``masking`` (the temporal-L1 rule and tau) -> ``fill`` (closed-form fills) and ``inpainter``
(the Latent Inpainting Transformer) -> ``restoration`` (which fill restores a clip, the lit guard,
the streaming rule) -> ``tokens`` (:class:`AdaptiveLatent`) and ``packing`` (tokens for a generator)
-> ``header`` / ``bitstream`` / ``reader`` (the ``.latok`` file) -> ``tokenizer``
(:class:`LatentTokenizer`: one encode, one inpaint, one decode).  Modules import what they need on
use, so importing the package costs nothing.
"""
