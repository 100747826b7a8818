"""Model files, each format written from its public specification and reference reader (see each
module): the Inria PLY, Niantic's SPZ, the SuperSplat / PlayCanvas compressed PLY, PlayCanvas SOG,
and our ``.sdz`` (container, plain and packed codecs, and their quantisation, Morton order and
k-means / VQ building blocks). ``splatdistill.formats.io``'s ``load_model`` / ``save_model``
dispatch to them."""
