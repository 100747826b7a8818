"""Image-quality metrics: PSNR, SSIM (3DGS convention) and LPIPS v0.1 (AlexNet, VGG16).

Import from the submodules: ``evaluate.ssim`` (``ssim``, ``psnr``),
``evaluate.lpips`` (``LPIPS``, ``LPIPSBank``, ``LPIPSUnavailable``) and
``evaluate.metrics`` (``image_metrics``, ``load_image``, ``compare_paths``).
Nothing is re-exported here: a package attribute ``ssim`` bound to the function
would shadow the ``ssim`` submodule (``import splatdistill.evaluate.ssim as m``
would then yield the function), and importing torch is left to the user.
"""
