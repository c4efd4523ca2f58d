"""The codec: what turns a latent into adaptive tokens and back.

``masking`` (the temporal-L1 rule and tau) -> ``fill`` / ``guard`` / ``inpainter`` (restoring
dropped positions) -> ``tokens`` (:class:`AdaptiveLatent`) and ``packing`` (tokens for a generator)
-> ``header`` / ``bitstream`` (the ``.latok`` file) -> ``tokenizer`` (:class:`LatentTokenizer`,
one encode, one inpaint, one decode).  Modules import what they need on use, so importing the
package costs nothing.
"""
