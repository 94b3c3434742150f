"""Networks brewnet ships as data: the Fashion-MNIST demo's LeNet (``lenet_bn_fashion_*``) and,
in :mod:`brewnet.models.generic`, the standard networks of DIGITS' generic job kinds."""
