"""Model file formats written from their public specifications and reference readers (see each
module): the SuperSplat / PlayCanvas compressed PLY and PlayCanvas SOG. ``splatdistill.info``'s
``load_model`` / ``save_model`` dispatch to them."""
